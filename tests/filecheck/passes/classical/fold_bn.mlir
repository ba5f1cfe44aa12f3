// tconv-fold-bn folds a batch-norm into the convolution or dense layer before
// it: the layer gets a rescaled weight and a bias under new names, the
// batch-norm and its parameters go. A batch-norm that cannot fold stays, with
// a remark; for a layer named explicitly, that is an error.

// RUN: tconv-opt %s -p 'tconv-fold-bn' 2>/dev/null | filecheck %s
// RUN: tconv-opt %s -p 'tconv-fold-bn' 2>&1 >/dev/null | filecheck %s --check-prefix=REMARK
// RUN: xdsl-opt %s -p 'tconv-fold-bn{layers="conv2,fc"}' | filecheck %s --check-prefix=SOME
// RUN: not tconv-opt %s -p 'tconv-fold-bn{layers="conv3"}' 2>&1 | filecheck %s --check-prefix=SHARED
// RUN: not tconv-opt %s -p 'tconv-fold-bn{layers="head"}' 2>&1 | filecheck %s --check-prefix=NONE
// RUN: not tconv-opt %s -p 'tconv-fold-bn{layers="block*"}' 2>&1 | filecheck %s --check-prefix=NOMATCH

func.func @net(%x: tensor<1x4x8x8xf32>) -> tensor<1x10xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<8x4x3x3xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [4 : i64]}} : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x8x8xf32>
  %s1 = tconv.param "bn1.weight" init ones : tensor<8xf32>
  %t1 = tconv.param "bn1.bias" init zeros : tensor<8xf32>
  %m1 = tconv.param "bn1.running_mean" init zeros : tensor<8xf32>
  %v1 = tconv.param "bn1.running_var" init ones : tensor<8xf32>
  %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %r1 = tconv.relu %b1 : tensor<1x8x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<8x2x3x3xf32>
  %bias2 = tconv.param "conv2.bias" init zeros : tensor<8xf32>
  %c2 = tconv.conv2d %r1, %w2, %bias2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x8x8x8xf32>, tensor<8x2x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %s2 = tconv.param "bn2.weight" init ones : tensor<8xf32>
  %t2 = tconv.param "bn2.bias" init zeros : tensor<8xf32>
  %m2 = tconv.param "bn2.running_mean" init zeros : tensor<8xf32>
  %v2 = tconv.param "bn2.running_var" init ones : tensor<8xf32>
  %b2 = tconv.batch_norm %c2, %s2, %t2, %m2, %v2 epsilon 1.000000e-03 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %w3 = tconv.param "conv3.weight" init kaiming_normal : tensor<8x8x1x1xf32>
  %c3 = tconv.conv2d %r1, %w3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x8x8xf32>
  %s3 = tconv.param "bn3.weight" init ones : tensor<8xf32>
  %t3 = tconv.param "bn3.bias" init zeros : tensor<8xf32>
  %m3 = tconv.param "bn3.running_mean" init zeros : tensor<8xf32>
  %v3 = tconv.param "bn3.running_var" init ones : tensor<8xf32>
  %b3 = tconv.batch_norm %c3, %s3, %t3, %m3, %v3 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %a = tconv.add %b2, %b3 : tensor<1x8x8x8xf32>
  %a2 = tconv.add %a, %c3 : tensor<1x8x8x8xf32>
  %s4 = tconv.param "bn4.weight" init ones : tensor<8xf32>
  %t4 = tconv.param "bn4.bias" init zeros : tensor<8xf32>
  %m4 = tconv.param "bn4.running_mean" init zeros : tensor<8xf32>
  %v4 = tconv.param "bn4.running_var" init ones : tensor<8xf32>
  %b4 = tconv.batch_norm %a2, %s4, %t4, %m4, %v4 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %w5 = tconv.param "head.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %c5 = tconv.conv2d %b4, %w5 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x4x4xf32>
  %g = tconv.global_avg_pool %c5 : (tensor<1x16x4x4xf32>) -> tensor<1x16x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x16x1x1xf32>) -> tensor<1x16xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x16xf32>
  %o = tconv.dense %f, %fw : (tensor<1x16xf32>, tensor<10x16xf32>) -> tensor<1x10xf32>
  %s5 = tconv.param "bn5.weight" init ones : tensor<10xf32>
  %t5 = tconv.param "bn5.bias" init zeros : tensor<10xf32>
  %m5 = tconv.param "bn5.running_mean" init zeros : tensor<10xf32>
  %v5 = tconv.param "bn5.running_var" init ones : tensor<10xf32>
  %b5 = tconv.batch_norm %o, %s5, %t5, %m5, %v5 epsilon 1.000000e-05 : (tensor<1x10xf32>, tensor<10xf32>, tensor<10xf32>, tensor<10xf32>, tensor<10xf32>) -> tensor<1x10xf32>
  func.return %b5 : tensor<1x10xf32>
}

// CHECK:      %0 = tconv.param "conv1_bn.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT: %1 = tconv.param "conv1_bn.bias" init zeros : tensor<8xf32>
// CHECK-NEXT: %b1 = tconv.conv2d %x, %0, %1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [4 : i64]}} : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
// CHECK-NEXT: %r1 = tconv.relu %b1 : tensor<1x8x8x8xf32>
// CHECK-NEXT: %2 = tconv.param "conv2_bn.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// CHECK-NEXT: %3 = tconv.param "conv2_bn.bias" init zeros : tensor<8xf32>
// CHECK-NEXT: %b2 = tconv.conv2d %r1, %2, %3 {{.*}} groups 4 : (tensor<1x8x8x8xf32>, tensor<8x2x3x3xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
// CHECK-NEXT: %w3 = tconv.param "conv3.weight"
// CHECK:      %b3 = tconv.batch_norm %c3, %s3, %t3, %m3, %v3
// CHECK:      %b4 = tconv.batch_norm %a2, %s4, %t4, %m4, %v4
// CHECK:      %4 = tconv.param "fc_bn.weight" init kaiming_normal : tensor<10x16xf32>
// CHECK-NEXT: %5 = tconv.param "fc_bn.bias" init zeros : tensor<10xf32>
// CHECK-NEXT: %b5 = tconv.dense %f, %4, %5 : (tensor<1x16xf32>, tensor<10x16xf32>, tensor<10xf32>) -> tensor<1x10xf32>
// CHECK-NEXT: func.return %b5 : tensor<1x10xf32>

// REMARK:      remark: tconv-fold-bn: left bn3 alone: conv3's result has other users, which read it unnormalised
// REMARK-NEXT: remark: tconv-fold-bn: left bn4 alone: its input is not a convolution or dense layer

// SOME:      %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1
// SOME:      %b2 = tconv.conv2d %r1, %0, %1 {{.*}} groups 4
// SOME:      %b3 = tconv.batch_norm
// SOME:      %b4 = tconv.batch_norm
// SOME:      %b5 = tconv.dense %f, %2, %3 :

// SHARED:  error: tconv-fold-bn: cannot fold bn3 into conv3: conv3's result has other users, which read it unnormalised
// NONE:    error: tconv-fold-bn: cannot fold into head: no batch_norm reads its result
// NOMATCH: error: tconv-fold-bn: no convolution or dense layer matches layers='block*'
