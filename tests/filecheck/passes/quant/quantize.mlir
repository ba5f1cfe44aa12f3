// tconv-quantize puts a quantize → dequantize pair on the input (uint8, per
// tensor, calibrated on digits) and on the weight (int8, symmetric, per output
// channel along axis 0) of every convolution and dense layer. A value read by
// two layers gets one pair; a residual add reading it reads the pair's
// dequantized value too (residuals=quantized), or the f32 value (float).

// RUN: tconv-opt %s -p 'tconv-quantize{samples=16}' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-quantize{weights=per-tensor activation-type=int8 calibration=percentile percentile=99.9 samples=8}' | filecheck %s --check-prefix=TENSOR
// RUN: tconv-opt %s -p 'tconv-quantize{samples=8 residuals=float}' | filecheck %s --check-prefix=FLOAT
// RUN: tconv-opt %s -p 'tconv-quantize{samples=8}' | not tconv-opt - -p 'tconv-quantize{samples=8}' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not tconv-opt %s -p 'tconv-quantize{weights=per-row}' 2>&1 | filecheck %s --check-prefix=OPTION
// RUN: not tconv-opt %s -p 'tconv-quantize{calibration=percentile percentile=20}' 2>&1 | filecheck %s --check-prefix=PERCENTILE

// CHECK:      func.func @classifier(%x: tensor<1x1x8x8xf32>) -> (tensor<1x10xf32>, tensor<1x4x8x8xf32>) {
// CHECK-NEXT:   %x_q = tconv.quantize %x scale [{{[0-9.e+-]+}}] zero_point [{{[0-9]+}}] : (tensor<1x1x8x8xf32>) -> tensor<1x1x8x8xui8>
// CHECK-NEXT:   %x_dq = tconv.dequantize %x_q scale [{{[0-9.e+-]+}}] zero_point [{{[0-9]+}}] : (tensor<1x1x8x8xui8>) -> tensor<1x1x8x8xf32>
// CHECK-NEXT:   %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x1x3x3xf32>
// CHECK-NEXT:   %w_q = tconv.quantize %w scale [{{[0-9.e+-]+}}, {{[0-9.e+-]+}}, {{[0-9.e+-]+}}, {{[0-9.e+-]+}}] zero_point [0, 0, 0, 0] axis 0 : (tensor<4x1x3x3xf32>) -> tensor<4x1x3x3xi8>
// CHECK-NEXT:   %w_dq = tconv.dequantize %w_q scale {{.*}} zero_point [0, 0, 0, 0] axis 0 : (tensor<4x1x3x3xi8>) -> tensor<4x1x3x3xf32>
// CHECK-NEXT:   %b = tconv.param "conv.bias" init zeros : tensor<4xf32>
// CHECK-NEXT:   %y = tconv.conv2d %x_dq, %w_dq, %b {{.*}} : (tensor<1x1x8x8xf32>, tensor<4x1x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT:   %r = tconv.relu %y : tensor<1x4x8x8xf32>
// CHECK-NEXT:   %r_q = tconv.quantize %r scale [{{[0-9.e+-]+}}] zero_point [0] : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xui8>
// CHECK-NEXT:   %r_dq = tconv.dequantize %r_q
// CHECK-NEXT:   %w2 = tconv.param "conv2.weight"
// CHECK-NEXT:   %w2_q = tconv.quantize %w2
// CHECK-NEXT:   %w2_dq = tconv.dequantize %w2_q
// CHECK-NEXT:   %y2 = tconv.conv2d %r_dq, %w2_dq
// CHECK-NEXT:   %w3 = tconv.param "conv3.weight"
// CHECK-NEXT:   %w3_q = tconv.quantize %w3
// CHECK-NEXT:   %w3_dq = tconv.dequantize %w3_q
// CHECK-NEXT:   %y3 = tconv.conv2d %r_dq, %w3_dq
// CHECK-NEXT:   %s = tconv.add %y2, %r_dq : tensor<1x4x8x8xf32>
// CHECK:        %f_q = tconv.quantize %f
// CHECK-NEXT:   %f_dq = tconv.dequantize %f_q
// CHECK-NEXT:   %fw = tconv.param "fc.weight"
// CHECK-NEXT:   %fw_q = tconv.quantize %fw scale [{{.*}}] zero_point [0, 0, 0, 0, 0, 0, 0, 0, 0, 0] axis 0 : (tensor<10x4xf32>) -> tensor<10x4xi8>
// CHECK:        %o = tconv.dense %f_dq, %fw_dq

// TENSOR:       %x_q = tconv.quantize %x scale [{{[0-9.e+-]+}}] zero_point [0] : (tensor<1x1x8x8xf32>) -> tensor<1x1x8x8xi8>
// TENSOR:       %w_q = tconv.quantize %w scale [{{[0-9.e+-]+}}] zero_point [0] : (tensor<4x1x3x3xf32>) -> tensor<4x1x3x3xi8>

// FLOAT:        %s = tconv.add %y2, %r : tensor<1x4x8x8xf32>

// TWICE:      error: tconv-quantize: no unquantised convolution or dense layer in the module

// OPTION:     error: tconv-quantize: weights must be per-channel or per-tensor, got 'per-row'
// PERCENTILE: error: tconv-quantize: percentile must lie in (50, 100], got 20

func.func @classifier(%x: tensor<1x1x8x8xf32>) -> (tensor<1x10xf32>, tensor<1x4x8x8xf32>) {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x1x3x3xf32>
  %b = tconv.param "conv.bias" init zeros : tensor<4xf32>
  %y = tconv.conv2d %x, %w, %b strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x1x8x8xf32>, tensor<4x1x3x3xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
  %r = tconv.relu %y : tensor<1x4x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<4x4x3x3xf32>
  %y2 = tconv.conv2d %r, %w2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32>
  %w3 = tconv.param "conv3.weight" init kaiming_normal : tensor<4x4x1x1xf32>
  %y3 = tconv.conv2d %r, %w3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
  %s = tconv.add %y2, %r : tensor<1x4x8x8xf32>
  %g = tconv.global_avg_pool %s : (tensor<1x4x8x8xf32>) -> tensor<1x4x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x4xf32>
  %o = tconv.dense %f, %fw : (tensor<1x4xf32>, tensor<10x4xf32>) -> tensor<1x10xf32>
  func.return %o, %y3 : tensor<1x10xf32>, tensor<1x4x8x8xf32>
}
