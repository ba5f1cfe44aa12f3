// tconv-fuse marks every op with the kernel it runs in (tconv.kernel, in
// execution order): a convolution absorbs its batch-norm, the residual add and
// the activation; options keep each of them out of the kernel. Marks an
// earlier run wrote are replaced.

// RUN: tconv-opt %s -p 'tconv-fuse' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-fuse{residual=false}' | filecheck %s --check-prefix=RESIDUAL
// RUN: xdsl-opt %s -p 'tconv-fuse{batch_norm=false activation=false}' | filecheck %s --check-prefix=ALONE
// RUN: tconv-opt %s -p 'tconv-fuse{residual=false},tconv-fuse' | filecheck %s

func.func @net(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  %s1 = tconv.param "bn1.weight" init ones : tensor<8xf32>
  %t1 = tconv.param "bn1.bias" init zeros : tensor<8xf32>
  %m1 = tconv.param "bn1.running_mean" init zeros : tensor<8xf32>
  %v1 = tconv.param "bn1.running_var" init ones : tensor<8xf32>
  %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %r1 = tconv.relu %b1 : tensor<1x8x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %c2 = tconv.conv2d %r1, %w2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  %s2 = tconv.param "bn2.weight" init ones : tensor<8xf32>
  %t2 = tconv.param "bn2.bias" init zeros : tensor<8xf32>
  %m2 = tconv.param "bn2.running_mean" init zeros : tensor<8xf32>
  %v2 = tconv.param "bn2.running_var" init ones : tensor<8xf32>
  %b2 = tconv.batch_norm %c2, %s2, %t2, %m2, %v2 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %a = tconv.add %b2, %r1 {tconv.kernel = 7 : i64} : tensor<1x8x8x8xf32>
  %r2 = tconv.relu6 %a : tensor<1x8x8x8xf32>
  %p = tconv.max_pool2d %r2 kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32>
  func.return %p : tensor<1x8x4x4xf32>
}

// CHECK:      %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 {tconv.kernel = 0 : i64} :
// CHECK:      %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1 epsilon 1.000000e-05 {tconv.kernel = 0 : i64} :
// CHECK-NEXT: %r1 = tconv.relu %b1 {tconv.kernel = 0 : i64} :
// CHECK:      %c2 = tconv.conv2d %r1, %w2 {{.*}} {tconv.kernel = 1 : i64} :
// CHECK:      %b2 = tconv.batch_norm {{.*}} {tconv.kernel = 1 : i64} :
// CHECK-NEXT: %a = tconv.add %b2, %r1 {tconv.kernel = 1 : i64} :
// CHECK-NEXT: %r2 = tconv.relu6 %a {tconv.kernel = 1 : i64} :
// CHECK-NEXT: %p = tconv.max_pool2d %r2 {{.*}} {tconv.kernel = 2 : i64} :
// CHECK-NEXT: func.return %p

// RESIDUAL:      %b1 = tconv.batch_norm {{.*}} {tconv.kernel = 0 : i64} :
// RESIDUAL-NEXT: %r1 = tconv.relu %b1 {tconv.kernel = 0 : i64} :
// RESIDUAL:      %b2 = tconv.batch_norm {{.*}} {tconv.kernel = 1 : i64} :
// RESIDUAL-NEXT: %a = tconv.add %b2, %r1 {tconv.kernel = 2 : i64} :
// RESIDUAL-NEXT: %r2 = tconv.relu6 %a {tconv.kernel = 2 : i64} :
// RESIDUAL-NEXT: %p = tconv.max_pool2d %r2 {{.*}} {tconv.kernel = 3 : i64} :

// ALONE:      %c1 = tconv.conv2d {{.*}} {tconv.kernel = 0 : i64} :
// ALONE:      %b1 = tconv.batch_norm {{.*}} {tconv.kernel = 1 : i64} :
// ALONE-NEXT: %r1 = tconv.relu %b1 {tconv.kernel = 2 : i64} :
// ALONE:      %c2 = tconv.conv2d {{.*}} {tconv.kernel = 3 : i64} :
// ALONE:      %b2 = tconv.batch_norm {{.*}} {tconv.kernel = 4 : i64} :
// ALONE-NEXT: %a = tconv.add %b2, %r1 {tconv.kernel = 5 : i64} :
// ALONE-NEXT: %r2 = tconv.relu6 %a {tconv.kernel = 6 : i64} :
// ALONE-NEXT: %p = tconv.max_pool2d %r2 {{.*}} {tconv.kernel = 7 : i64} :
