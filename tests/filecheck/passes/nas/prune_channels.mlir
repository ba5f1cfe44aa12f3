// tconv-prune-channels removes the lowest-Fisher output channels of a
// convolution and the matching inputs of its consumers; the survivors get new
// names. With check-capacity, a rewrite that loses too much is refused. The
// criterion (fisher, magnitude, uniform) decides which channels survive, not
// the shapes: every criterion gives the same IR (the values differ; see
// tests/unit/test_prune.py).

// RUN: tconv-opt %s -p 'tconv-prune-channels{keep=6 batch=4}' 2>&1 | filecheck %s
// RUN: tconv-opt %s -p 'tconv-prune-channels{keep=0.25 layers="head"}' | filecheck %s --check-prefix=RATIO
// RUN: not tconv-opt %s -p 'tconv-prune-channels{keep=0.5 layers="head" check-capacity=true min-capacity=100}' 2>&1 | filecheck %s --check-prefix=ILLEGAL
// RUN: tconv-opt %s -p 'tconv-prune-channels{keep=0.25 layers="head" criterion=fisher}' | filecheck %s --check-prefix=RATIO
// RUN: tconv-opt %s -p 'tconv-prune-channels{keep=0.25 layers="head" criterion=magnitude}' | filecheck %s --check-prefix=RATIO
// RUN: tconv-opt %s -p 'tconv-prune-channels{keep=0.25 layers="head" criterion=uniform}' | filecheck %s --check-prefix=RATIO
// RUN: not tconv-opt %s -p 'tconv-prune-channels{keep=0}' 2>&1 | filecheck %s --check-prefix=ZERO
// RUN: not tconv-opt %s -p 'tconv-prune-channels{keep=0.5 criterion=taylor}' 2>&1 | filecheck %s --check-prefix=CRITERION

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

// CHECK:      remark: tconv-prune-channels: skipped conv1, conv2: it feeds a residual add
// CHECK:      %0 = tconv.param "head_p6.weight" init kaiming_normal : tensor<6x8x3x3xf32>
// CHECK-NEXT: %1 = tconv.param "head_p6.bias" init zeros : tensor<6xf32>
// CHECK-NEXT: %c3 = tconv.conv2d %r2, %0, %1 {{.*}} -> tensor<1x6x4x4xf32>
// CHECK-NEXT: %2 = tconv.param "bn3_p6.weight" init ones : tensor<6xf32>
// CHECK:      %b3 = tconv.batch_norm %c3, %2, %3, %4, %5 {{.*}} -> tensor<1x6x4x4xf32>
// CHECK:      %6 = tconv.param "fc_p6.weight" init kaiming_normal : tensor<10x6xf32>
// CHECK-NEXT: %o = tconv.dense %f, %6, %fb : (tensor<1x6xf32>, tensor<10x6xf32>, tensor<10xf32>) -> tensor<1x10xf32>

// RATIO:      tconv.param "head_p4.weight" init kaiming_normal : tensor<4x8x3x3xf32>
// RATIO-NEXT: tconv.param "head_p4.bias" init zeros : tensor<4xf32>
// RATIO:      tconv.param "fc_p4.weight" init kaiming_normal : tensor<10x4xf32>

// ILLEGAL:    error: tconv-prune-channels: rewrite of head refused: naswot capacity {{[0-9.e+-]+}} before, {{[0-9.e+-]+}} after (ratio {{[0-9.e+-]+}}, min-capacity 100; batch 8, seed 0); the module is unchanged
// ZERO:       error: tconv-prune-channels: keep must be a ratio in (0, 1] or a channel count, got 0
// CRITERION:  error: tconv-prune-channels: criterion must be one of fisher, magnitude, uniform, got 'taylor'
