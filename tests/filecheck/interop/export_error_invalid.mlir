// export-mlir reads verified tconv IR only: an invalid network is a located
// error, and no MLIR is written.

// RUN: rm -f %t.mlir
// RUN: not tconv export-mlir %s -o %t.mlir 2>&1 | filecheck %s
// RUN: not test -e %t.mlir

func.func @net(%x: tensor<1x30x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x7x3x3xf32>
  // CHECK: {{.*}}export_error_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: input channels 30 not divisible by groups 4
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x30x8x8xf32>, tensor<8x7x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
