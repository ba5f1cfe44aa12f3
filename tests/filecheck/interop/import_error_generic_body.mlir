// A linalg.generic whose body is none of the imported forms (here a leaky
// relu) is a located error; nothing is written.

// RUN: rm -f %t.mlir %t.npz
// RUN: not tconv import-mlir %s -o %t.mlir 2>&1 | filecheck %s
// RUN: not test -e %t.mlir
// RUN: not test -e %t.npz

#identity = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @leaky_relu(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %slope = arith.constant 0.01 : f32
  %e = tensor.empty() : tensor<1x4x6x6xf32>
  // CHECK: {{.*}}import_error_generic_body.mlir:[[# @LINE + 1]]:3: error: linalg.generic: not one of the forms tconv imports (relu, relu6, add, batch norm, window sum, spatial sum, division, quantize, per-channel quantize, dequantize, per-channel dequantize)
  %y = linalg.generic {indexing_maps = [#identity, #identity], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%x : tensor<1x4x6x6xf32>) outs(%e : tensor<1x4x6x6xf32>) {
  ^bb0(%in: f32, %out: f32):
    %scaled = arith.mulf %in, %slope : f32
    %max = arith.maximumf %in, %scaled : f32
    linalg.yield %max : f32
  } -> tensor<1x4x6x6xf32>
  func.return %y : tensor<1x4x6x6xf32>
}
