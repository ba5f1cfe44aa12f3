// tconv-group makes each eligible convolution grouped: a new weight with
// C/groups input channels per output channel, and the groups property.
// init (inherit, random, auto) changes only the new weight's values, not the IR.

// RUN: tconv-opt %s -p 'tconv-group{groups=2}' | filecheck %s
// RUN: xdsl-opt %s -p 'tconv-group{groups=2}' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-group{groups=2 init=inherit}' | filecheck %s
// RUN: not tconv-opt %s -p 'tconv-group{groups=2 init=copy}' 2>&1 | filecheck %s --check-prefix=INIT
// RUN: tconv-opt %s -p 'tconv-group{groups=4 layers="conv2,he*"}' 2>&1 | filecheck %s --check-prefix=PICK
// RUN: not tconv-opt %s -p 'tconv-group{groups=3 layers="conv1"}' 2>&1 | filecheck %s --check-prefix=REFUSE
// RUN: not tconv-opt %s -p 'tconv-group{groups=2 layers="conv7"}' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not tconv-opt %s -p 'tconv-group{groups=0}' 2>&1 | filecheck %s --check-prefix=ZERO

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

// CHECK:      %0 = tconv.param "conv1_g2.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// CHECK-NEXT: %c1 = tconv.conv2d %x, %0 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 2 : (tensor<1x4x8x8xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x8x8xf32>
// CHECK:      %1 = tconv.param "conv2_g2.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT: %c2 = tconv.conv2d %r1, %1 {{.*}} groups 2 : (tensor<1x8x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x8x8xf32>
// CHECK:      %2 = tconv.param "head_g2.weight" init kaiming_normal : tensor<16x4x3x3xf32>
// CHECK-NEXT: %c3 = tconv.conv2d %r2, %2, %bias3 strides [2, 2] {{.*}} groups 2 : (tensor<1x8x8x8xf32>, tensor<16x4x3x3xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
// CHECK-NOT:  "conv1.weight"

// PICK-NOT:   remark
// PICK:       %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1
// PICK:       tconv.param "conv2_g4.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// PICK:       tconv.param "head_g4.weight" init kaiming_normal : tensor<16x2x3x3xf32>

// REFUSE:     error: tconv-group: cannot rewrite conv1: its input channels 4 are not divisible by groups 3
// UNKNOWN:    error: tconv-group: unknown layer 'conv7' (the convolutions are: conv1, conv2, head)
// ZERO:       error: tconv-group: groups must be at least 2, got 0
// INIT:       error: tconv-group: init must be one of auto, inherit, random, got 'copy'
