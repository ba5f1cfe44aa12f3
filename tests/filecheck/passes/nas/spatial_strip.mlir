// tconv-spatial-strip computes a convolution's output rows in horizontal
// strips, each a convolution with its own weights over the input rows it
// needs (a tconv.slice of the height, its halo included), joined on the height.

// RUN: tconv-opt %s -p 'tconv-spatial-strip{strips=3 layers="conv1"}' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-spatial-strip{strips=2 layers="head"}' | filecheck %s --check-prefix=STRIDED
// RUN: tconv-opt %s -p 'tconv-spatial-strip{strips=4}' 2>&1 | filecheck %s --check-prefix=SKIP
// RUN: not tconv-opt %s -p 'tconv-spatial-strip{strips=6 layers="head"}' 2>&1 | filecheck %s --check-prefix=REFUSE

func.func @net(%x: tensor<1x4x9x8xf32>) -> tensor<1x10xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<8x4x3x3xf32>
  %c1 = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x9x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x9x8xf32>
  %r1 = tconv.relu %c1 : tensor<1x8x9x8xf32>
  %w2 = tconv.param "head.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %b2 = tconv.param "head.bias" init zeros : tensor<16xf32>
  %c2 = tconv.conv2d %r1, %w2, %b2 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x9x8xf32>, tensor<16x8x3x3xf32>, tensor<16xf32>) -> tensor<1x16x5x4xf32>
  %r2 = tconv.relu %c2 : tensor<1x16x5x4xf32>
  %w3 = tconv.param "tail.weight" init kaiming_normal : tensor<16x16x5x1xf32>
  %c3 = tconv.conv2d %r2, %w3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x16x5x4xf32>, tensor<16x16x5x1xf32>) -> tensor<1x16x1x4xf32>
  %g = tconv.global_avg_pool %c3 : (tensor<1x16x1x4xf32>) -> tensor<1x16x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x16x1x1xf32>) -> tensor<1x16xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x16xf32>
  %o = tconv.dense %f, %fw : (tensor<1x16xf32>, tensor<10x16xf32>) -> tensor<1x10xf32>
  func.return %o : tensor<1x10xf32>
}

// Three strips of three output rows: the top one keeps the top padding, the
// bottom one the bottom padding, the middle one reads a halo row each side.
// CHECK:      %0 = tconv.slice %x axis 2 start 0 size 4 : (tensor<1x4x9x8xf32>) -> tensor<1x4x4x8xf32>
// CHECK-NEXT: %1 = tconv.param "conv1_strip0.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT: %2 = tconv.conv2d %0, %1 strides [1, 1] padding [1, 1, 0, 1] dilations [1, 1] groups 1 : (tensor<1x4x4x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x3x8xf32>
// CHECK-NEXT: %3 = tconv.slice %x axis 2 start 2 size 5 : (tensor<1x4x9x8xf32>) -> tensor<1x4x5x8xf32>
// CHECK-NEXT: %4 = tconv.param "conv1_strip1.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT: %5 = tconv.conv2d %3, %4 strides [1, 1] padding [0, 1, 0, 1] dilations [1, 1] groups 1 : (tensor<1x4x5x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x3x8xf32>
// CHECK-NEXT: %6 = tconv.slice %x axis 2 start 5 size 4 : (tensor<1x4x9x8xf32>) -> tensor<1x4x4x8xf32>
// CHECK-NEXT: %7 = tconv.param "conv1_strip2.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT: %8 = tconv.conv2d %6, %7 strides [1, 1] padding [0, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x4x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x3x8xf32>
// CHECK-NEXT: %c1 = tconv.concat %2, %5, %8 axis 2 : (tensor<1x8x3x8xf32>, tensor<1x8x3x8xf32>, tensor<1x8x3x8xf32>) -> tensor<1x8x9x8xf32>
// CHECK-NEXT: %r1 = tconv.relu %c1 : tensor<1x8x9x8xf32>

// Stride 2 over 9 rows: 5 output rows as 3 + 2. Output row 3 reads input
// rows 5 to 7, so the bottom strip starts at row 5 and reaches the bottom
// padding; each strip has its own bias.
// STRIDED:      %0 = tconv.slice %r1 axis 2 start 0 size 6 : (tensor<1x8x9x8xf32>) -> tensor<1x8x6x8xf32>
// STRIDED-NEXT: %1 = tconv.param "head_strip0.weight" init kaiming_normal : tensor<16x8x3x3xf32>
// STRIDED-NEXT: %2 = tconv.param "head_strip0.bias" init zeros : tensor<16xf32>
// STRIDED-NEXT: %3 = tconv.conv2d %0, %1, %2 strides [2, 2] padding [1, 1, 0, 1] dilations [1, 1] groups 1 : (tensor<1x8x6x8xf32>, tensor<16x8x3x3xf32>, tensor<16xf32>) -> tensor<1x16x3x4xf32>
// STRIDED-NEXT: %4 = tconv.slice %r1 axis 2 start 5 size 4 : (tensor<1x8x9x8xf32>) -> tensor<1x8x4x8xf32>
// STRIDED-NEXT: %5 = tconv.param "head_strip1.weight" init kaiming_normal : tensor<16x8x3x3xf32>
// STRIDED-NEXT: %6 = tconv.param "head_strip1.bias" init zeros : tensor<16xf32>
// STRIDED-NEXT: %7 = tconv.conv2d %4, %5, %6 strides [2, 2] padding [0, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x4x8xf32>, tensor<16x8x3x3xf32>, tensor<16xf32>) -> tensor<1x16x2x4xf32>
// STRIDED-NEXT: %c2 = tconv.concat %3, %7 axis 2 : (tensor<1x16x3x4xf32>, tensor<1x16x2x4xf32>) -> tensor<1x16x5x4xf32>

// Every convolution with at least four output rows is cut; the one-row tail is skipped.
// SKIP: remark: tconv-spatial-strip: skipped tail: strips 4 exceed its 1 output rows
// SKIP: tconv.param "conv1_strip3.weight"
// SKIP: tconv.param "head_strip3.weight"
// SKIP: %c3 = tconv.conv2d %r2, %w3

// REFUSE: error: tconv-spatial-strip: cannot rewrite head: strips 6 exceed its 5 output rows (the convolution at {{.*}}spatial_strip.mlir:16:3)
