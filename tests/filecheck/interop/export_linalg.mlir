// Every tconv op as upstream MLIR: tconv export-mlir writes func, linalg,
// tensor, arith and math ops; the text parses again in xDSL, in custom and
// generic syntax; and tconv import-mlir reads it back to the same network.

// RUN: tconv export-mlir %s | filecheck %s
// RUN: tconv export-mlir %s | xdsl-opt | filecheck %s
// RUN: tconv export-mlir %s --generic | xdsl-opt | filecheck %s
// RUN: tconv export-mlir %s --generic | filecheck %s --check-prefix=GENERIC
// RUN: tconv-opt %s -o %t.tconv.mlir
// RUN: tconv export-mlir %s -o %t.linalg.mlir | filecheck %s --check-prefix=WROTE
// RUN: tconv import-mlir %t.linalg.mlir -o %t.back.mlir
// RUN: tconv-opt %t.back.mlir | diff %t.tconv.mlir -

// WROTE: wrote {{.*}}.linalg.mlir (upstream MLIR, 9 parameter arguments; their values stay in {{.*}}export_linalg.npz)
// GENERIC: "linalg.conv_2d_nchw_fchw"
// GENERIC: "linalg.conv_2d_ngchw_gfchw"

func.func @every_op(%x: tensor<1x4x8x8xf32>) -> tensor<1x3xf32> {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<8x4x3x3xf32>
  %b = tconv.param "conv.bias" init zeros : tensor<8xf32>
  %conv = tconv.conv2d %x, %w, %b strides [2, 1] padding [0, 1, 2, 1] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>, tensor<8xf32>) -> tensor<1x8x4x8xf32>
  %scale = tconv.param "bn.weight" init ones : tensor<8xf32>
  %shift = tconv.param "bn.bias" init zeros : tensor<8xf32>
  %mean = tconv.param "bn.running_mean" init zeros : tensor<8xf32>
  %var = tconv.param "bn.running_var" init ones : tensor<8xf32>
  %bn = tconv.batch_norm %conv, %scale, %shift, %mean, %var epsilon 1.000000e-05 : (tensor<1x8x4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x4x8xf32>
  %relu = tconv.relu %bn : tensor<1x8x4x8xf32>
  %gw = tconv.param "grouped.weight" init kaiming_normal : tensor<8x2x3x3xf32>
  %grouped = tconv.conv2d %relu, %gw strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x8x4x8xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x4x8xf32>
  %relu6 = tconv.relu6 %grouped : tensor<1x8x4x8xf32>
  %sum = tconv.add %relu, %relu6 : tensor<1x8x4x8xf32>
  %shuffled = tconv.channel_shuffle %sum groups 2 : tensor<1x8x4x8xf32>
  %max = tconv.max_pool2d %shuffled kernel [3, 3] strides [1, 1] padding [1, 1, 1, 1] : (tensor<1x8x4x8xf32>) -> tensor<1x8x4x8xf32>
  %avg = tconv.avg_pool2d %max kernel [2, 2] strides [2, 2] padding [1, 0, 1, 0] : (tensor<1x8x4x8xf32>) -> tensor<1x8x3x4xf32>
  %first = tconv.slice_channels %avg start 0 size 2 : (tensor<1x8x3x4xf32>) -> tensor<1x2x3x4xf32>
  %joined = tconv.concat %avg, %first axis 1 : (tensor<1x8x3x4xf32>, tensor<1x2x3x4xf32>) -> tensor<1x10x3x4xf32>
  %rows = tconv.slice %joined axis 2 start 1 size 2 : (tensor<1x10x3x4xf32>) -> tensor<1x10x2x4xf32>
  %pooled = tconv.global_avg_pool %rows : (tensor<1x10x2x4xf32>) -> tensor<1x10x1x1xf32>
  %flat = tconv.flatten %pooled : (tensor<1x10x1x1xf32>) -> tensor<1x10xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<3x10xf32>
  %fb = tconv.param "fc.bias" init zeros : tensor<3xf32>
  %logits = tconv.dense %flat, %fw, %fb : (tensor<1x10xf32>, tensor<3x10xf32>, tensor<3xf32>) -> tensor<1x3xf32>
  func.return %logits : tensor<1x3xf32>
}

// Parameters are arguments after the input, named after their store keys.
// CHECK:      func.func @every_op(%x: tensor<1x4x8x8xf32>, %w: tensor<8x4x3x3xf32> {tconv.param = "conv.weight", tconv.init = "kaiming_normal"}, %b: tensor<8xf32> {tconv.param = "conv.bias", tconv.init = "zeros"},
// CHECK-SAME:   %fb: tensor<3xf32> {tconv.param = "fc.bias", tconv.init = "zeros"}) -> tensor<1x3xf32> {

// conv2d: asymmetric zero padding, the bias broadcast into the accumulator.
// CHECK:      [[ZERO:%[0-9]+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT: [[PADDED:%[0-9]+]] = tensor.pad %x low[0, 0, 0, 1] high[0, 0, 2, 1] {
// CHECK:        tensor.yield [[ZERO]] : f32
// CHECK-NEXT: } : tensor<1x4x8x8xf32> to tensor<1x4x10x10xf32>
// CHECK-NEXT: [[EMPTY:%[0-9]+]] = tensor.empty() : tensor<1x8x4x8xf32>
// CHECK-NEXT: [[BIAS:%[0-9]+]] = linalg.broadcast ins(%b:tensor<8xf32>) outs([[EMPTY]]:tensor<1x8x4x8xf32>) dimensions = [0, 2, 3]
// CHECK-NEXT: %conv = linalg.conv_2d_nchw_fchw {strides = dense<[2, 1]> : tensor<2xi64>, dilations = dense<1> : tensor<2xi64>} ins([[PADDED]], %w : tensor<1x4x10x10xf32>, tensor<8x4x3x3xf32>) outs([[BIAS]] : tensor<1x8x4x8xf32>) -> tensor<1x8x4x8xf32>

// batch_norm: one generic over the input and the per-channel vectors.
// CHECK:      %bn = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%conv, %scale, %shift, %mean, %var : {{.*}}) outs({{%[0-9]+}} : tensor<1x8x4x8xf32>) {
// CHECK-NEXT: ^bb0([[X:%[0-9]+]]: f32, [[SCALE:%[0-9]+]]: f32, [[SHIFT:%[0-9]+]]: f32, [[MEAN:%[0-9]+]]: f32, [[VAR:%[0-9]+]]: f32, {{%[0-9]+}}: f32):
// CHECK-NEXT:   [[EPS:%[0-9]+]] = arith.constant 1.000000e-05 : f32
// CHECK-NEXT:   [[V:%[0-9]+]] = arith.addf [[VAR]], [[EPS]] : f32
// CHECK-NEXT:   [[S:%[0-9]+]] = math.sqrt [[V]] : f32
// CHECK-NEXT:   [[C:%[0-9]+]] = arith.subf [[X]], [[MEAN]] : f32
// CHECK-NEXT:   [[N:%[0-9]+]] = arith.divf [[C]], [[S]] : f32
// CHECK-NEXT:   [[M:%[0-9]+]] = arith.mulf [[N]], [[SCALE]] : f32
// CHECK-NEXT:   [[R:%[0-9]+]] = arith.addf [[M]], [[SHIFT]] : f32
// CHECK-NEXT:   linalg.yield [[R]] : f32

// relu: max with zero, in an elementwise generic.
// CHECK:      %relu = linalg.generic {{.*}} ins(%bn : tensor<1x8x4x8xf32>)
// CHECK:        arith.maximumf

// conv2d with groups: reshaped operands around linalg.conv_2d_ngchw_gfchw.
// CHECK:      [[XG:%[0-9]+]] = tensor.expand_shape {{%[0-9]+}} {{\[\[}}0 : i64], [1 : i64, 2 : i64], [3 : i64], [4 : i64]] output_shape [1, 4, 2, 6, 10] : tensor<1x8x6x10xf32> into tensor<1x4x2x6x10xf32>
// CHECK-NEXT: [[WG:%[0-9]+]] = tensor.expand_shape %gw {{\[\[}}0 : i64, 1 : i64], [2 : i64], [3 : i64], [4 : i64]] output_shape [4, 2, 2, 3, 3] : tensor<8x2x3x3xf32> into tensor<4x2x2x3x3xf32>
// CHECK-NEXT: [[IG:%[0-9]+]] = tensor.expand_shape
// CHECK-NEXT: [[YG:%[0-9]+]] = linalg.conv_2d_ngchw_gfchw {strides = dense<1> : tensor<2xi64>, dilations = dense<1> : tensor<2xi64>} ins([[XG]], [[WG]] : tensor<1x4x2x6x10xf32>, tensor<4x2x2x3x3xf32>) outs([[IG]] : tensor<1x4x2x4x8xf32>) -> tensor<1x4x2x4x8xf32>
// CHECK-NEXT: %grouped = tensor.collapse_shape [[YG]] {{\[\[}}0 : i64], [1 : i64, 2 : i64], [3 : i64], [4 : i64]] : tensor<1x4x2x4x8xf32> into tensor<1x8x4x8xf32>

// relu6 clamps to [0, 6]; add sums two operands.
// CHECK:      %relu6 = linalg.generic
// CHECK:        arith.maximumf
// CHECK-NEXT:   arith.minimumf
// CHECK:      %sum = linalg.generic {{.*}} ins(%relu, %relu6 : tensor<1x8x4x8xf32>, tensor<1x8x4x8xf32>)
// CHECK:        arith.addf

// channel_shuffle: expand, swap the two channel dimensions, collapse.
// CHECK:      linalg.transpose ins({{%[0-9]+}}:tensor<1x2x4x4x8xf32>) outs({{%[0-9]+}}:tensor<1x4x2x4x8xf32>) permutation = [0, 2, 1, 3, 4]
// CHECK-NEXT: %shuffled = tensor.collapse_shape

// max_pool2d: -inf padding and start value.
// CHECK:      [[NINF:%[0-9]+]] = arith.constant 0xff800000 : f32
// CHECK:        tensor.yield [[NINF]] : f32
// CHECK:      [[WINDOW:%[0-9]+]] = tensor.empty() : tensor<3x3xf32>
// CHECK:      linalg.fill ins([[NINF]] : f32)
// CHECK-NEXT: %max = linalg.pooling_nchw_max {strides = dense<1> : tensor<2xi64>, dilations = dense<1> : tensor<2xi64>} ins({{%[0-9]+}}, [[WINDOW]] : tensor<1x8x6x10xf32>, tensor<3x3xf32>)

// avg_pool2d: a window sum, divided by the number of input positions in each
// window (the first and last rows of windows overlap the padding).
// CHECK:      [[SUMS:%[0-9]+]] = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, ((d2 * 2) + d4), ((d3 * 2) + d5))>, affine_map<(d0, d1, d2, d3, d4, d5) -> (d4, d5)>, affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction", "reduction"]}
// CHECK:      [[COUNTS:%[0-9]+]] = arith.constant dense<{{\[\[}}2.000000e+00, 2.000000e+00, 2.000000e+00, 2.000000e+00], [4.000000e+00, 4.000000e+00, 4.000000e+00, 4.000000e+00], [2.000000e+00, 2.000000e+00, 2.000000e+00, 2.000000e+00]]> : tensor<3x4xf32>
// CHECK:      %avg = linalg.generic {{.*}} ins([[SUMS]], [[COUNTS]] : tensor<1x8x3x4xf32>, tensor<3x4xf32>)
// CHECK:        arith.divf

// slice_channels, concat, slice (of rows).
// CHECK:      %first = tensor.extract_slice %avg[0, 0, 0, 0] [1, 2, 3, 4] [1, 1, 1, 1] : tensor<1x8x3x4xf32> to tensor<1x2x3x4xf32>
// CHECK-NEXT: %joined = tensor.concat dim(1) %avg, %first : (tensor<1x8x3x4xf32>, tensor<1x2x3x4xf32>) -> tensor<1x10x3x4xf32>
// CHECK-NEXT: %rows = tensor.extract_slice %joined[0, 0, 1, 0] [1, 10, 2, 4] [1, 1, 1, 1] : tensor<1x10x3x4xf32> to tensor<1x10x2x4xf32>

// global_avg_pool: a sum over height and width, divided by 2 x 4.
// CHECK:      linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>], iterator_types = ["parallel", "parallel", "reduction", "reduction"]} ins(%rows : tensor<1x10x2x4xf32>)
// CHECK:      arith.constant dense<8.000000e+00> : tensor<1x1xf32>
// CHECK:      %pooled = linalg.generic

// flatten, dense: matmul on the transposed weight, from the broadcast bias.
// CHECK:      %flat = tensor.collapse_shape %pooled {{\[\[}}0 : i64], [1 : i64, 2 : i64, 3 : i64]] : tensor<1x10x1x1xf32> into tensor<1x10xf32>
// CHECK:      [[WT:%[0-9]+]] = linalg.transpose ins(%fw:tensor<3x10xf32>) outs({{%[0-9]+}}:tensor<10x3xf32>) permutation = [1, 0]
// CHECK:      [[FB:%[0-9]+]] = linalg.broadcast ins(%fb:tensor<3xf32>) outs({{%[0-9]+}}:tensor<1x3xf32>) dimensions = [0]
// CHECK-NEXT: %logits = linalg.matmul ins(%flat, [[WT]] : tensor<1x10xf32>, tensor<10x3xf32>) outs([[FB]] : tensor<1x3xf32>) -> tensor<1x3xf32>
// CHECK-NEXT: func.return %logits : tensor<1x3xf32>
