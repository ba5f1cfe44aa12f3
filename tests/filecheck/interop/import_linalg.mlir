// tconv import-mlir reads what people write by hand and what upstream tools
// print, not only what export-mlir writes: upstream's printed syntax with
// map aliases; a convolution without padding or window attributes; a bias
// added after the convolution; xDSL's named linalg.add and linalg.max; a
// relu6 body with commuted operands and constants from outside it;
// linalg.conv_2d_ngchw_fgchw on a transposed filter; a max pool from the
// lowest finite f32; an average pool that counts the padding.

// RUN: tconv import-mlir %s -o %t.mlir | filecheck %s --check-prefix=WROTE
// RUN: filecheck %s --input-file %t.mlir
// RUN: tconv export-mlir %t.mlir | filecheck %s --check-prefix=EXPORTED

// WROTE:      wrote {{.*}}.mlir (tconv IR, verified)
// WROTE-NEXT: wrote {{.*}}.npz (4 parameters, freshly initialised, seed 0)

#identity = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
#window = affine_map<(n, c, oh, ow, kh, kw) -> (n, c, oh + kh, ow + kw)>
module {
  func.func @handwritten(%image: tensor<1x4x8x8xf32>, %arg1: tensor<8x4x3x3xf32> {tconv.param = "stem.weight"}, %arg2: tensor<8xf32> {tconv.param = "stem.bias"}, %arg3: tensor<8x2x3x3xf32> {tconv.param = "grouped.weight", tconv.init = "zeros"}, %unused: tensor<5xf32> {tconv.param = "unused"}, %arg5: tensor<3x72xf32> {tconv.param = "fc.weight"}) -> tensor<1x3xf32> {
    %cst = arith.constant 0.000000e+00 : f32
    %six = arith.constant 6.000000e+00 : f32
    %lowest = arith.constant -3.40282347E+38 : f32
    %0 = tensor.empty() : tensor<1x8x6x6xf32>
    %zeros = linalg.fill ins(%cst : f32) outs(%0 : tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %1 = linalg.conv_2d_nchw_fchw ins(%image, %arg1 : tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>) outs(%zeros : tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %bias = linalg.broadcast ins(%arg2 : tensor<8xf32>) outs(%0 : tensor<1x8x6x6xf32>) dimensions = [0, 2, 3]
    %stem = linalg.add ins(%1, %bias : tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) outs(%0 : tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %relu = linalg.max ins(%zeros, %stem : tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) outs(%0 : tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %clamped = linalg.generic {indexing_maps = [#identity, #identity], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%relu : tensor<1x8x6x6xf32>) outs(%0 : tensor<1x8x6x6xf32>) {
    ^bb0(%in: f32, %out: f32):
      %2 = arith.maximumf %cst, %in : f32
      %3 = arith.minimumf %six, %2 : f32
      linalg.yield %3 : f32
    } -> tensor<1x8x6x6xf32>
    %expanded = tensor.expand_shape %clamped [[0], [1, 2], [3], [4]] output_shape [1, 4, 2, 6, 6] : tensor<1x8x6x6xf32> into tensor<1x4x2x6x6xf32>
    %filter = tensor.expand_shape %arg3 [[0, 1], [2], [3], [4]] output_shape [4, 2, 2, 3, 3] : tensor<8x2x3x3xf32> into tensor<4x2x2x3x3xf32>
    %4 = tensor.empty() : tensor<2x4x2x3x3xf32>
    %transposed = linalg.transpose ins(%filter : tensor<4x2x2x3x3xf32>) outs(%4 : tensor<2x4x2x3x3xf32>) permutation = [1, 0, 2, 3, 4]
    %5 = tensor.empty() : tensor<1x4x2x4x4xf32>
    %6 = linalg.fill ins(%cst : f32) outs(%5 : tensor<1x4x2x4x4xf32>) -> tensor<1x4x2x4x4xf32>
    %7 = linalg.conv_2d_ngchw_fgchw {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>} ins(%expanded, %transposed : tensor<1x4x2x6x6xf32>, tensor<2x4x2x3x3xf32>) outs(%6 : tensor<1x4x2x4x4xf32>) -> tensor<1x4x2x4x4xf32>
    %grouped = tensor.collapse_shape %7 [[0], [1, 2], [3], [4]] : tensor<1x4x2x4x4xf32> into tensor<1x8x4x4xf32>
    %padded = tensor.pad %grouped low[0, 0, 1, 1] high[0, 0, 1, 1] {
    ^bb0(%i: index, %j: index, %k: index, %l: index):
      tensor.yield %lowest : f32
    } : tensor<1x8x4x4xf32> to tensor<1x8x6x6xf32>
    %8 = tensor.empty() : tensor<2x2xf32>
    %9 = tensor.empty() : tensor<1x8x3x3xf32>
    %10 = linalg.fill ins(%lowest : f32) outs(%9 : tensor<1x8x3x3xf32>) -> tensor<1x8x3x3xf32>
    %max = linalg.pooling_nchw_max {strides = dense<2> : tensor<2xi64>} ins(%padded, %8 : tensor<1x8x6x6xf32>, tensor<2x2xf32>) outs(%10 : tensor<1x8x3x3xf32>) -> tensor<1x8x3x3xf32>
    %padded_0 = tensor.pad %max low[0, 0, 1, 1] high[0, 0, 1, 1] {
    ^bb0(%i: index, %j: index, %k: index, %l: index):
      tensor.yield %cst : f32
    } : tensor<1x8x3x3xf32> to tensor<1x8x5x5xf32>
    %11 = tensor.empty() : tensor<3x3xf32>
    %12 = linalg.fill ins(%cst : f32) outs(%9 : tensor<1x8x3x3xf32>) -> tensor<1x8x3x3xf32>
    %sums = linalg.generic {indexing_maps = [#window, affine_map<(n, c, oh, ow, kh, kw) -> (kh, kw)>, affine_map<(n, c, oh, ow, kh, kw) -> (n, c, oh, ow)>], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction", "reduction"]} ins(%padded_0, %11 : tensor<1x8x5x5xf32>, tensor<3x3xf32>) outs(%12 : tensor<1x8x3x3xf32>) {
    ^bb0(%in: f32, %in_1: f32, %acc: f32):
      %13 = arith.addf %acc, %in : f32
      linalg.yield %13 : f32
    } -> tensor<1x8x3x3xf32>
    %nine = arith.constant dense<9.000000e+00> : tensor<3x3xf32>
    %average = linalg.generic {indexing_maps = [#identity, affine_map<(d0, d1, d2, d3) -> (d2, d3)>, #identity], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%sums, %nine : tensor<1x8x3x3xf32>, tensor<3x3xf32>) outs(%9 : tensor<1x8x3x3xf32>) {
    ^bb0(%in: f32, %in_1: f32, %out: f32):
      %14 = arith.divf %in, %in_1 : f32
      linalg.yield %14 : f32
    } -> tensor<1x8x3x3xf32>
    %flat = tensor.collapse_shape %average [[0], [1, 2, 3]] : tensor<1x8x3x3xf32> into tensor<1x72xf32>
    %15 = tensor.empty() : tensor<72x3xf32>
    %weight = linalg.transpose ins(%arg5 : tensor<3x72xf32>) outs(%15 : tensor<72x3xf32>) permutation = [1, 0]
    %16 = tensor.empty() : tensor<1x3xf32>
    %17 = linalg.fill ins(%cst : f32) outs(%16 : tensor<1x3xf32>) -> tensor<1x3xf32>
    %logits = linalg.matmul ins(%flat, %weight : tensor<1x72xf32>, tensor<72x3xf32>) outs(%17 : tensor<1x3xf32>) -> tensor<1x3xf32>
    return %logits : tensor<1x3xf32>
  }
}

// Parameters appear where the network first uses them, with the initialiser
// their role gives them unless the argument names one; unused ones are dropped.
// CHECK:      func.func @handwritten(%image: tensor<1x4x8x8xf32>) -> tensor<1x3xf32> {
// CHECK-NEXT:   %arg1 = tconv.param "stem.weight" init kaiming_normal : tensor<8x4x3x3xf32>
// CHECK-NEXT:   %arg2 = tconv.param "stem.bias" init zeros : tensor<8xf32>
// CHECK-NEXT:   %stem = tconv.conv2d %image, %arg1, %arg2 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<1x8x6x6xf32>
// CHECK-NEXT:   %relu = tconv.relu %stem : tensor<1x8x6x6xf32>
// CHECK-NEXT:   %clamped = tconv.relu6 %relu : tensor<1x8x6x6xf32>
// CHECK-NEXT:   %arg3 = tconv.param "grouped.weight" init zeros : tensor<8x2x3x3xf32>
// CHECK-NEXT:   %grouped = tconv.conv2d %clamped, %arg3 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 4 : (tensor<1x8x6x6xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x4x4xf32>
// CHECK-NEXT:   %max = tconv.max_pool2d %grouped kernel [2, 2] strides [2, 2] padding [1, 1, 1, 1] : (tensor<1x8x4x4xf32>) -> tensor<1x8x3x3xf32>
// CHECK-NEXT:   %average = tconv.avg_pool2d %max kernel [3, 3] strides [1, 1] padding [1, 1, 1, 1] count_include_pad : (tensor<1x8x3x3xf32>) -> tensor<1x8x3x3xf32>
// CHECK-NEXT:   %flat = tconv.flatten %average : (tensor<1x8x3x3xf32>) -> tensor<1x72xf32>
// CHECK-NEXT:   %arg5 = tconv.param "fc.weight" init kaiming_normal : tensor<3x72xf32>
// CHECK-NEXT:   %logits = tconv.dense %flat, %arg5 : (tensor<1x72xf32>, tensor<3x72xf32>) -> tensor<1x3xf32>
// CHECK-NEXT:   func.return %logits : tensor<1x3xf32>
// CHECK-NEXT: }

// Exported again, the network takes export-mlir's own forms.
// EXPORTED: func.func @handwritten(%image: tensor<1x4x8x8xf32>, %arg1: tensor<8x4x3x3xf32> {tconv.param = "stem.weight", tconv.init = "kaiming_normal"}, %arg2: tensor<8xf32> {tconv.param = "stem.bias", tconv.init = "zeros"}, %arg3: tensor<8x2x3x3xf32> {tconv.param = "grouped.weight", tconv.init = "zeros"}, %arg5: tensor<3x72xf32> {tconv.param = "fc.weight", tconv.init = "kaiming_normal"}) -> tensor<1x3xf32> {
// EXPORTED: linalg.conv_2d_ngchw_gfchw
// EXPORTED: %average = linalg.generic
