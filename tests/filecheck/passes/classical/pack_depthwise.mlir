// tconv-pack and depthwise convolutions: a depthwise convolution's vector is a
// block of channels, so it reads and writes NCHW[b]c as it is stored, and
// MobileNet's expansion → depthwise → projection chain stays in blocks from
// end to end (both activations of a depthwise convolution in blocks of one
// size). A block that does not divide its channels, or a schedule whose
// vector of channels is another size, leaves it NCHW.

// RUN: tconv-opt %s -p 'tconv-pack' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-pack{block=16}' 2>&1 | filecheck %s --check-prefix=SIXTEEN
// RUN: tconv-opt %s -p 'tconv-tile{loop=g factors=4 layers=dw},tconv-pack' 2>&1 | filecheck %s --check-prefix=VECTOR

func.func @net(%x: tensor<1x16x8x8xf32>) -> tensor<1x16x4x4xf32> {
  %w1 = tconv.param "expand.weight" init kaiming_normal : tensor<48x16x1x1xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x16x8x8xf32>, tensor<48x16x1x1xf32>) -> tensor<1x48x8x8xf32>
  %r1 = tconv.relu6 %c1 : tensor<1x48x8x8xf32>
  %w2 = tconv.param "dw.weight" init kaiming_normal : tensor<48x1x3x3xf32>
  %c2 = tconv.conv2d %r1, %w2 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 48 : (tensor<1x48x8x8xf32>, tensor<48x1x3x3xf32>) -> tensor<1x48x4x4xf32>
  %r2 = tconv.relu6 %c2 : tensor<1x48x4x4xf32>
  %w3 = tconv.param "project.weight" init kaiming_normal : tensor<16x48x1x1xf32>
  %c3 = tconv.conv2d %r2, %w3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x48x4x4xf32>, tensor<16x48x1x1xf32>) -> tensor<1x16x4x4xf32>
  func.return %c3 : tensor<1x16x4x4xf32>
}

// CHECK:      %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 schedule {layout = {input = "NCHW", output = "NCHW8c"}} :
// CHECK:      %c2 = tconv.conv2d %r1, %w2 {{.*}} groups 48 schedule {layout = {input = "NCHW8c", output = "NCHW8c"}} :
// CHECK:      %c3 = tconv.conv2d %r2, %w3 {{.*}} groups 1 schedule {layout = {input = "NCHW8c", output = "NCHW"}} :

// 48 channels are three blocks of 16 too.
// SIXTEEN:    %c2 = tconv.conv2d %r1, %w2 {{.*}} groups 48 schedule {layout = {input = "NCHW16c", output = "NCHW16c"}} :

// VECTOR:     remark: tconv-pack: left dw in NCHW: its schedule's vector of channels (tile g = [4]) is not the block 8
// VECTOR:     %c1 = tconv.conv2d %x, %w1 {{.*}} groups 1 :
// VECTOR:     %c2 = tconv.conv2d %r1, %w2 {{.*}} groups 48 schedule {tile = {g = [4{{.*}}]}} :
// VECTOR:     %c3 = tconv.conv2d %r2, %w3 {{.*}} groups 1 :
