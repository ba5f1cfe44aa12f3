// tconv-depthwise-separable factorises each KxK convolution into a depthwise
// KxK (original strides and padding) and a pointwise 1x1 that takes the bias.

// RUN: tconv-opt %s -p 'tconv-depthwise-separable' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-group{groups=2 layers="conv2"},tconv-depthwise-separable' 2>&1 | filecheck %s --check-prefix=GROUPED

func.func @net(%x: tensor<1x4x8x8xf32>) -> tensor<1x10xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<8x4x3x3xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x8x8xf32>
  %s1 = tconv.param "bn1.weight" init ones : tensor<8xf32>
  %t1 = tconv.param "bn1.bias" init zeros : tensor<8xf32>
  %m1 = tconv.param "bn1.running_mean" init zeros : tensor<8xf32>
  %v1 = tconv.param "bn1.running_var" init ones : tensor<8xf32>
  %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %r1 = tconv.relu %b1 : tensor<1x8x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %c2 = tconv.conv2d %r1, %w2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  %a = tconv.add %c2, %r1 : tensor<1x8x8x8xf32>
  %r2 = tconv.relu %a : tensor<1x8x8x8xf32>
  %w3 = tconv.param "head.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %bias3 = tconv.param "head.bias" init zeros : tensor<16xf32>
  %c3 = tconv.conv2d %r2, %w3, %bias3 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x3x3xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
  %s3 = tconv.param "bn3.weight" init ones : tensor<16xf32>
  %t3 = tconv.param "bn3.bias" init zeros : tensor<16xf32>
  %m3 = tconv.param "bn3.running_mean" init zeros : tensor<16xf32>
  %v3 = tconv.param "bn3.running_var" init ones : tensor<16xf32>
  %b3 = tconv.batch_norm %c3, %s3, %t3, %m3, %v3 epsilon 1.000000e-05 : (tensor<1x16x4x4xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
  %r3 = tconv.relu %b3 : tensor<1x16x4x4xf32>
  %g = tconv.global_avg_pool %r3 : (tensor<1x16x4x4xf32>) -> tensor<1x16x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x16x1x1xf32>) -> tensor<1x16xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x16xf32>
  %fb = tconv.param "fc.bias" init zeros : tensor<10xf32>
  %o = tconv.dense %f, %fw, %fb : (tensor<1x16xf32>, tensor<10x16xf32>, tensor<10xf32>) -> tensor<1x10xf32>
  func.return %o : tensor<1x10xf32>
}

// CHECK:      %0 = tconv.param "conv1_dw.weight" init kaiming_normal : tensor<4x1x3x3xf32>
// CHECK-NEXT: %1 = tconv.conv2d %x, %0 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x4x8x8xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %2 = tconv.param "conv1_pw.weight" init kaiming_normal : tensor<8x4x1x1xf32>
// CHECK-NEXT: %c1 = tconv.conv2d %1, %2 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x8x8xf32>
// CHECK:      %6 = tconv.param "head_dw.weight" init kaiming_normal : tensor<8x1x3x3xf32>
// CHECK-NEXT: %7 = tconv.conv2d %r2, %6 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 8 : (tensor<1x8x8x8xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x4x4xf32>
// CHECK-NEXT: %8 = tconv.param "head_pw.weight" init kaiming_normal : tensor<16x8x1x1xf32>
// CHECK-NEXT: %9 = tconv.param "head_pw.bias" init zeros : tensor<16xf32>
// CHECK-NEXT: %c3 = tconv.conv2d %7, %8, %9 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x8x4x4xf32>, tensor<16x8x1x1xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>

// GROUPED: remark: tconv-depthwise-separable: skipped conv2_g2: it is already grouped (2 groups)
// GROUPED: %c2 = tconv.conv2d %r1, %{{.*}} groups 2
