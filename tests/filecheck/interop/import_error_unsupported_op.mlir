// An op outside the imported forms is a located error; nothing is written.

// RUN: rm -f %t.mlir %t.npz
// RUN: not tconv import-mlir %s -o %t.mlir 2>&1 | filecheck %s
// RUN: not test -e %t.mlir
// RUN: not test -e %t.npz

func.func @softplus(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %e = tensor.empty() : tensor<1x4x6x6xf32>
  // CHECK: {{.*}}import_error_unsupported_op.mlir:[[# @LINE + 1]]:3: error: linalg.exp: not an op tconv imports
  %y = linalg.exp ins(%x : tensor<1x4x6x6xf32>) outs(%e : tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
  func.return %y : tensor<1x4x6x6xf32>
}
// CHECK-NOT: Traceback
