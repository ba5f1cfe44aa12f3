// Attributes tconv cannot represent are located errors; nothing is written.

// RUN: rm -f %t.mlir %t.npz
// RUN: not tconv import-mlir %s -o %t.mlir 2>&1 | filecheck %s
// RUN: not test -e %t.mlir
// RUN: not test -e %t.npz
// RUN: sed -e 's/dense<\[1, 1, 1\]> : tensor<3xi64>/dense<1> : tensor<2xi64>/' %s > %t.pool.mlir
// RUN: not tconv import-mlir %t.pool.mlir -o %t.mlir 2>&1 | filecheck %s --check-prefix=POOL
// RUN: not test -e %t.mlir
// RUN: sed -e 's/dense<2> : tensor<2xi64>, strides/dense<1> : tensor<2xi64>, strides/' -e 's/{tconv.param = "w"}/{tconv.param = 3 : i64}/' %t.pool.mlir > %t.param.mlir
// RUN: not tconv import-mlir %t.param.mlir -o %t.mlir 2>&1 | filecheck %s --check-prefix=PARAM
// RUN: not test -e %t.mlir

func.func @net(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x3x3xf32> {tconv.param = "w"}) -> tensor<1x4x2x2xf32> {
  %zero = arith.constant 0.000000e+00 : f32
  %lowest = arith.constant 0xFF800000 : f32
  %e = tensor.empty() : tensor<1x4x6x6xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
  // CHECK: {{.*}}import_error_attributes.mlir:[[# @LINE + 1]]:3: error: linalg.conv_2d_nchw_fchw: strides must be 2 integers (dense<[h, w]> : tensor<2xi64>), got dense<1> : tensor<3xi64>
  %c = linalg.conv_2d_nchw_fchw {strides = dense<[1, 1, 1]> : tensor<3xi64>} ins(%x, %w : tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) outs(%z : tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
  %window = tensor.empty() : tensor<2x2xf32>
  %pe = tensor.empty() : tensor<1x4x2x2xf32>
  %start = linalg.fill ins(%lowest : f32) outs(%pe : tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  // POOL: {{.*}}.pool.mlir:[[# @LINE + 1]]:3: error: linalg.pooling_nchw_max: tconv pools without dilation
  %p = linalg.pooling_nchw_max {dilations = dense<2> : tensor<2xi64>, strides = dense<2> : tensor<2xi64>} ins(%c, %window : tensor<1x4x6x6xf32>, tensor<2x2xf32>) outs(%start : tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  func.return %p : tensor<1x4x2x2xf32>
}
// PARAM: {{.*}}.param.mlir:{{[0-9]+}}:1: error: argument 1: tconv.param must be a string, got 3 : i64
