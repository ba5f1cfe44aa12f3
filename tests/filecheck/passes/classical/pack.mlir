// tconv-pack stores the activations between packed convolutions in channel
// blocks (NCHW8c): a tensor whose every reader is a packed convolution (as its
// input, or as the fused residual of a kernel writing NCHW8c) stays packed, so
// the conversions cancel; what the network's input, pooling or a grouped
// convolution touches stays NCHW, converted inside the boundary convolution.
// The decision follows the kernels (fusion marks or the default fusion).

// RUN: tconv-opt %s -p 'tconv-pack' 2>&1 | filecheck %s
// RUN: tconv-opt %s -p 'tconv-pack{block=16},tconv-pack' | filecheck %s --check-prefix=AGAIN
// RUN: tconv-opt %s -p 'tconv-pack{block=16}' | filecheck %s --check-prefix=SIXTEEN
// RUN: tconv-opt %s -p 'tconv-fuse{residual=false},tconv-pack' | filecheck %s --check-prefix=UNFUSED
// RUN: xdsl-opt %s -p 'tconv-pack{layers="conv1,conv2"}' | filecheck %s --check-prefix=LAYERS
// RUN: not tconv-opt %s -p 'tconv-pack{block=3}' 2>&1 | filecheck %s --check-prefix=NOTHING
// RUN: not tconv-opt %s -p 'tconv-pack{layers=conv4}' 2>&1 | filecheck %s --check-prefix=GROUPED
// RUN: not tconv-opt %s -p 'tconv-pack{layers=conv9}' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not tconv-opt %s -p 'tconv-pack{block=0}' 2>&1 | filecheck %s --check-prefix=BLOCK

func.func @net(%x: tensor<1x8x8x8xf32>) -> tensor<1x16x4x4xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x8x8xf32>
  %s1 = tconv.param "bn1.weight" init ones : tensor<16xf32>
  %t1 = tconv.param "bn1.bias" init zeros : tensor<16xf32>
  %m1 = tconv.param "bn1.running_mean" init zeros : tensor<16xf32>
  %v1 = tconv.param "bn1.running_var" init ones : tensor<16xf32>
  %b1 = tconv.batch_norm %c1, %s1, %t1, %m1, %v1 epsilon 1.000000e-05 : (tensor<1x16x8x8xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x8x8xf32>
  %r1 = tconv.relu %b1 : tensor<1x16x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<16x16x3x3xf32>
  %c2 = tconv.conv2d %r1, %w2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
  %s2 = tconv.param "bn2.weight" init ones : tensor<16xf32>
  %t2 = tconv.param "bn2.bias" init zeros : tensor<16xf32>
  %m2 = tconv.param "bn2.running_mean" init zeros : tensor<16xf32>
  %v2 = tconv.param "bn2.running_var" init ones : tensor<16xf32>
  %b2 = tconv.batch_norm %c2, %s2, %t2, %m2, %v2 epsilon 1.000000e-05 : (tensor<1x16x8x8xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x8x8xf32>
  %a = tconv.add %b2, %r1 : tensor<1x16x8x8xf32>
  %r2 = tconv.relu %a : tensor<1x16x8x8xf32>
  %w3 = tconv.param "conv3.weight" init kaiming_normal : tensor<16x16x1x1xf32>
  %c3 = tconv.conv2d %r2, %w3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x16x8x8xf32>, tensor<16x16x1x1xf32>) -> tensor<1x16x8x8xf32>
  %p = tconv.max_pool2d %c3 kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x16x8x8xf32>) -> tensor<1x16x4x4xf32>
  %w4 = tconv.param "conv4.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %c4 = tconv.conv2d %p, %w4 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 2 : (tensor<1x16x4x4xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x4x4xf32>
  func.return %c4 : tensor<1x16x4x4xf32>
}

// The network's input is NCHW: conv1 converts in its kernel, after its batch-norm and relu.
// CHECK:      remark: tconv-pack: left conv4 in NCHW: it is grouped (groups 2); packed layouts are for ungrouped and depthwise convolutions
// CHECK:      %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 schedule {layout = {input = "NCHW", output = "NCHW8c"}} :
// conv1 → conv2 cancels; the residual %r1 is read packed by conv2's kernel (bn2, add, relu fused), which writes NCHW8c.
// CHECK:      %c2 = tconv.conv2d %r1, %w2 {{.*}} groups 1 schedule {layout = {input = "NCHW8c", output = "NCHW8c"}} :
// Pooling reads NCHW: conv3 converts back in its kernel.
// CHECK:      %c3 = tconv.conv2d %r2, %w3 {{.*}} groups 1 schedule {layout = {input = "NCHW8c", output = "NCHW"}} :
// CHECK:      %c4 = tconv.conv2d %p, %w4 {{.*}} groups 2 :
// CHECK-NEXT: func.return %c4

// A second run replaces the layouts of the first.
// AGAIN:      %c1 = tconv.conv2d {{.*}} schedule {layout = {input = "NCHW", output = "NCHW8c"}} :
// AGAIN:      %c2 = tconv.conv2d {{.*}} schedule {layout = {input = "NCHW8c", output = "NCHW8c"}} :

// SIXTEEN:    %c1 = tconv.conv2d {{.*}} schedule {layout = {input = "NCHW", output = "NCHW16c"}} :
// SIXTEEN:    %c2 = tconv.conv2d {{.*}} schedule {layout = {input = "NCHW16c", output = "NCHW16c"}} :
// SIXTEEN:    %c3 = tconv.conv2d {{.*}} schedule {layout = {input = "NCHW16c", output = "NCHW"}} :

// With the add in a kernel of its own, it reads %r1 and %b2 in NCHW: no tensor
// has only packed readers, so nothing is packed and no layout is written.
// UNFUSED:    %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 {tconv.kernel = 0 : i64} :
// UNFUSED:    %c2 = tconv.conv2d %r1, %w2 {{.*}} groups 1 {tconv.kernel = 1 : i64} :
// UNFUSED:    %c3 = tconv.conv2d %r2, %w3 {{.*}} groups 1 {tconv.kernel = 3 : i64} :

// Only conv1 and conv2 selected: conv3 reads NCHW, so conv2's kernel writes
// NCHW and reads its fused residual %r1 in NCHW, so conv1 writes NCHW too.
// LAYERS:     %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 :
// LAYERS-NOT: layout

// NOTHING:    error: tconv-pack: block 3 fits no convolution (conv1: its 8 input channels are not divisible by 3, and its 16 output channels are not divisible by 3;
// GROUPED:    error: tconv-pack: cannot pack conv4: it is grouped (groups 2); packed layouts are for ungrouped and depthwise convolutions
// UNKNOWN:    error: tconv-pack: unknown layer 'conv9' (the convolutions are: conv1, conv2, conv3, conv4)
// BLOCK:      error: tconv-pack: block must be at least 1, got 0
