// The verifier rules of tconv.quantize and tconv.dequantize, and of integer
// tensors reaching the f32-only ops: each fails with its message at the op.

// RUN: tconv-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @scale_zero(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: scale 0.0 (index 0) must be a positive, finite float32
  %q = tconv.quantize %x scale [0.0] zero_point [0] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8>
  func.return %q : tensor<1x2x2x2xui8>
}

// -----

func.func @scale_negative(%q: tensor<1x2x2x2xi8>) -> tensor<1x2x2x2xf32> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: dequantize: scale -0.5 (index 1) must be a positive, finite float32
  %y = tconv.dequantize %q scale [0.5, -0.5] zero_point [0, 0] axis 1 : (tensor<1x2x2x2xi8>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}

// -----

func.func @scale_underflows_f32(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: scale 1.0e-50 (index 0) must be a positive, finite float32
  %q = tconv.quantize %x scale [1.0e-50] zero_point [0] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8>
  func.return %q : tensor<1x2x2x2xui8>
}

// -----

func.func @zero_point_unsigned(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: zero_point 256 (index 0) out of range [0, 255] of ui8
  %q = tconv.quantize %x scale [0.5] zero_point [256] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xui8>
  func.return %q : tensor<1x2x2x2xui8>
}

// -----

func.func @zero_point_signed(%q: tensor<1x2x2x2xi8>) -> tensor<1x2x2x2xf32> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: dequantize: zero_point 128 (index 0) out of range [-128, 127] of i8
  %y = tconv.dequantize %q scale [0.5] zero_point [128] : (tensor<1x2x2x2xi8>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}

// -----

func.func @axis_out_of_range(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: axis 4 out of range for a rank-4 tensor (1x2x2x2); expected 0 to 3
  %q = tconv.quantize %x scale [0.5, 0.5] zero_point [0, 0] axis 4 : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8>
  func.return %q : tensor<1x2x2x2xi8>
}

// -----

func.func @channels_mismatched(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: 3 scales for axis 1 of size 2 (1x2x2x2); per-channel needs one per index
  %q = tconv.quantize %x scale [0.5, 0.5, 0.5] zero_point [0, 0, 0] axis 1 : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8>
  func.return %q : tensor<1x2x2x2xi8>
}

// -----

func.func @zero_points_mismatched(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: scale has 2 values but zero_point has 1
  %q = tconv.quantize %x scale [0.5, 0.5] zero_point [0] axis 1 : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8>
  func.return %q : tensor<1x2x2x2xi8>
}

// -----

func.func @per_tensor_many(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: 2 scales need an axis (per-channel); per-tensor takes one
  %q = tconv.quantize %x scale [0.5, 0.5] zero_point [0, 0] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8>
  func.return %q : tensor<1x2x2x2xi8>
}

// -----

func.func @result_type(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi32> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: quantize: result must have element type i8 or ui8, got i32
  %q = tconv.quantize %x scale [0.5] zero_point [0] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi32>
  func.return %q : tensor<1x2x2x2xi32>
}

// -----

func.func @shape_changed(%q: tensor<1x2x2x2xi8>) -> tensor<1x2x4x1xf32> {
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: dequantize: result shape 1x2x4x1 does not match the operand's shape 1x2x2x2
  %y = tconv.dequantize %q scale [0.5] zero_point [0] : (tensor<1x2x2x2xi8>) -> tensor<1x2x4x1xf32>
  func.return %y : tensor<1x2x4x1xf32>
}

// -----

func.func @int_into_relu(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %q = tconv.quantize %x scale [0.5] zero_point [0] : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xi8>
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: relu: operand 0 has element type i8, but relu computes on f32 only: a quantized tensor must pass through tconv.dequantize first
  %y = tconv.relu %q : (tensor<1x2x2x2xi8>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}

// -----

func.func @int_into_conv(%x: tensor<1x2x4x4xf32>) -> tensor<1x2x2x2xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<2x2x3x3xf32>
  %q = tconv.quantize %x scale [0.5] zero_point [128] : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xui8>
  // CHECK: {{.*}}quant_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: operand 0 has element type ui8, but conv2d computes on f32 only: a quantized tensor must pass through tconv.dequantize first
  %y = tconv.conv2d %q, %w strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x2x4x4xui8>, tensor<2x2x3x3xf32>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}
