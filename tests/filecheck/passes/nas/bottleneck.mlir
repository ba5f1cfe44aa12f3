// tconv-bottleneck shrinks the output channels of eligible convolutions by a
// factor; batch-norm, the classifier and the function type follow. Convolutions
// feeding a residual add keep their channels (a remark says why).

// RUN: tconv-opt %s -p 'tconv-bottleneck{factor=4}' 2>&1 | filecheck %s
// RUN: not tconv-opt %s -p 'tconv-bottleneck{factor=4 layers="conv2"}' 2>&1 | filecheck %s --check-prefix=REFUSE
// RUN: not tconv-opt %s -p 'tconv-bottleneck{factor=3 layers="head"}' 2>&1 | filecheck %s --check-prefix=DIVIDE
// RUN: not tconv-opt %s -p 'tconv-bottleneck{factor=0}' 2>&1 | filecheck %s --check-prefix=ZERO

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

// CHECK:      remark: tconv-bottleneck: skipped conv1, conv2: it feeds a residual add whose other operand keeps its channels
// CHECK:      %c2 = tconv.conv2d %r1, %w2 {{.*}} -> tensor<1x8x8x8xf32>
// CHECK:      %0 = tconv.param "head_b4.weight" init kaiming_normal : tensor<4x8x3x3xf32>
// CHECK-NEXT: %1 = tconv.param "head_b4.bias" init zeros : tensor<4xf32>
// CHECK-NEXT: %c3 = tconv.conv2d %r2, %0, %1 strides [2, 2] {{.*}} -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %2 = tconv.param "bn3_b4.weight" init ones : tensor<4xf32>
// CHECK-NEXT: %3 = tconv.param "bn3_b4.bias" init zeros : tensor<4xf32>
// CHECK-NEXT: %4 = tconv.param "bn3_b4.running_mean" init zeros : tensor<4xf32>
// CHECK-NEXT: %5 = tconv.param "bn3_b4.running_var" init ones : tensor<4xf32>
// CHECK-NEXT: %b3 = tconv.batch_norm %c3, %2, %3, %4, %5 {{.*}} -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %r3 = tconv.relu %b3 : tensor<1x4x4x4xf32>
// CHECK-NEXT: %g = tconv.global_avg_pool %r3 : (tensor<1x4x4x4xf32>) -> tensor<1x4x1x1xf32>
// CHECK-NEXT: %f = tconv.flatten %g : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
// CHECK-NEXT: %fb = tconv.param "fc.bias" init zeros : tensor<10xf32>
// CHECK-NEXT: %6 = tconv.param "fc_b4.weight" init kaiming_normal : tensor<10x4xf32>
// CHECK-NEXT: %o = tconv.dense %f, %6, %fb : (tensor<1x4xf32>, tensor<10x4xf32>, tensor<10xf32>) -> tensor<1x10xf32>

// REFUSE: error: tconv-bottleneck: cannot rewrite conv2: it feeds a residual add whose other operand keeps its channels
// DIVIDE: error: tconv-bottleneck: cannot rewrite head: its output channels 16 are not divisible by factor 3
// ZERO:   error: tconv-bottleneck: factor must be at least 2, got 0
