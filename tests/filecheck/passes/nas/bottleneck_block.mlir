// tconv-bottleneck-block replaces a KxK convolution by 1x1 down to
// O/factor channels, KxK at that width, and 1x1 back up.

// RUN: tconv-opt %s -p 'tconv-bottleneck-block{factor=2 layers="conv1"}' | filecheck %s
// RUN: not tconv-opt %s -p 'tconv-bottleneck-block{factor=3 layers="conv1"}' 2>&1 | filecheck %s --check-prefix=DIVIDE

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

// CHECK:      %0 = tconv.param "conv1_down.weight" init kaiming_normal : tensor<4x4x1x1xf32>
// CHECK-NEXT: %1 = tconv.conv2d %x, %0 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %2 = tconv.param "conv1_mid.weight" init kaiming_normal : tensor<4x4x3x3xf32>
// CHECK-NEXT: %3 = tconv.conv2d %1, %2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32>
// CHECK-NEXT: %4 = tconv.param "conv1_up.weight" init kaiming_normal : tensor<8x4x1x1xf32>
// CHECK-NEXT: %c1 = tconv.conv2d %3, %4 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x8x8xf32>
// CHECK-NOT:  "conv1.weight"

// DIVIDE: error: tconv-bottleneck-block: cannot rewrite conv1: its output channels 8 are not divisible by factor 3
