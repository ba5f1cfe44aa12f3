// One chunk per verifier rule: each must fail with the rule's message at the
// position of the op that breaks it (lines counted in the whole file).

// RUN: tconv-opt %s --split-input-file --verify-diagnostics | filecheck %s
// RUN: rm -f %t.out
// RUN: not tconv-opt %s -o %t.out 2>&1 | filecheck %s --check-prefix=FIRST
// RUN: not test -e %t.out

// FIRST: {{.*}}invalid.mlir:{{[0-9]+}}:3: error: conv2d: input channels 30 not divisible by groups 4
// FIRST-NOT: Traceback

func.func @conv_groups_input(%x: tensor<1x30x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x7x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: input channels 30 not divisible by groups 4
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x30x8x8xf32>, tensor<8x7x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @conv_groups_output(%x: tensor<1x8x8x8xf32>) -> tensor<1x6x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<6x2x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: output channels 6 not divisible by groups 4
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x8x8x8xf32>, tensor<6x2x3x3xf32>) -> tensor<1x6x8x8xf32>
  func.return %y : tensor<1x6x8x8xf32>
}

// -----

func.func @conv_weight_channels(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: weight has 8 input channels per group, expected 8 / groups 2 = 4
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 2 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @conv_bias(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  %b = tconv.param "b" init zeros : tensor<4xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: bias shape 4 must be 8 (output channels)
  %y = tconv.conv2d %x, %w, %b strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>, tensor<4xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @conv_negative_padding(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x6x6xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: padding must be non-negative, got [0, 0, -1, 0]
  %y = tconv.conv2d %x, %w strides [1, 1] padding [0, 0, -1, 0] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
  func.return %y : tensor<1x8x6x6xf32>
}

// -----

func.func @conv_padding_length(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: padding needs 4 values, got 2 ([1, 1])
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @conv_zero_stride(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: strides must be positive, got [0, 1]
  %y = tconv.conv2d %x, %w strides [0, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @conv_window_too_large(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x1x1xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: height window 5 (kernel 3, dilation 2) exceeds padded input height 4 (4 + padding 0+0)
  %y = tconv.conv2d %x, %w strides [1, 1] padding [0, 0, 0, 0] dilations [2, 2] groups 1 : (tensor<1x8x4x4xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x1x1xf32>
  func.return %y : tensor<1x8x1x1xf32>
}

// -----

func.func @conv_result_shape(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: result shape 1x8x8x8 does not match the inferred shape 1x8x4x4
  %y = tconv.conv2d %x, %w strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @pool_padding(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x5x5xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: max_pool2d: width padding 2 must be smaller than kernel 2
  %y = tconv.max_pool2d %x kernel [2, 2] strides [2, 2] padding [1, 2, 1, 1] : (tensor<1x8x8x8xf32>) -> tensor<1x8x5x5xf32>
  func.return %y : tensor<1x8x5x5xf32>
}

// -----

func.func @avg_pool_kernel(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: avg_pool2d: kernel must be positive, got [0, 1]
  %y = tconv.avg_pool2d %x kernel [0, 1] strides [1, 1] padding [0, 0, 0, 0] count_include_pad : (tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @batch_norm_channels(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %scale = tconv.param "bn.weight" init ones : tensor<8xf32>
  %shift = tconv.param "bn.bias" init zeros : tensor<8xf32>
  %mean = tconv.param "bn.running_mean" init zeros : tensor<16xf32>
  %var = tconv.param "bn.running_var" init ones : tensor<8xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: batch_norm: mean shape 16 must be 8 (input channels)
  %y = tconv.batch_norm %x, %scale, %shift, %mean, %var epsilon 1.000000e-05 : (tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<16xf32>, tensor<8xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @batch_norm_epsilon(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %scale = tconv.param "bn.weight" init ones : tensor<8xf32>
  %shift = tconv.param "bn.bias" init zeros : tensor<8xf32>
  %mean = tconv.param "bn.running_mean" init zeros : tensor<8xf32>
  %var = tconv.param "bn.running_var" init ones : tensor<8xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: batch_norm: epsilon must be positive, got 0.0
  %y = tconv.batch_norm %x, %scale, %shift, %mean, %var epsilon 0.000000e+00 : (tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @add_shapes(%a: tensor<1x8x4x4xf32>, %b: tensor<1x8x2x2xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: add: operand shapes differ: 1x8x4x4 and 1x8x2x2
  %y = tconv.add %a, %b : (tensor<1x8x4x4xf32>, tensor<1x8x2x2xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @relu_shape(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x2x8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: relu: result shape 1x8x2x8 does not match the inferred shape 1x8x4x4
  %y = tconv.relu %x : (tensor<1x8x4x4xf32>) -> tensor<1x8x2x8xf32>
  func.return %y : tensor<1x8x2x8xf32>
}

// -----

func.func @flatten_rank(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: flatten: input must have rank 4 (NCHW), got rank 2 (2x8)
  %y = tconv.flatten %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}

// -----

func.func @dense_features(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
  %w = tconv.param "fc.weight" init kaiming_normal : tensor<4x16xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: dense: weight has 16 input features, input has 8
  %y = tconv.dense %x, %w : (tensor<2x8xf32>, tensor<4x16xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}

// -----

func.func @dense_bias(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
  %w = tconv.param "fc.weight" init kaiming_normal : tensor<4x8xf32>
  %b = tconv.param "fc.bias" init zeros : tensor<8xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: dense: bias shape 8 must be 4 (output features)
  %y = tconv.dense %x, %w, %b : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}

// -----

func.func @concat_shapes(%a: tensor<1x8x4x4xf32>, %b: tensor<1x8x2x4xf32>) -> tensor<1x16x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: concat: input 1 shape 1x8x2x4 differs from input 0 shape 1x8x4x4 in dimension 2 (only axis 1 may differ)
  %y = tconv.concat %a, %b axis 1 : (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>) -> tensor<1x16x4x4xf32>
  func.return %y : tensor<1x16x4x4xf32>
}

// -----

func.func @concat_axis(%a: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: concat: axis 4 out of range for rank 4
  %y = tconv.concat %a axis 4 : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @slice_range(%x: tensor<1x8x4x4xf32>) -> tensor<1x4x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice_channels: channels [6, 10) out of range for 8 input channels
  %y = tconv.slice_channels %x start 6 size 4 : (tensor<1x8x4x4xf32>) -> tensor<1x4x4x4xf32>
  func.return %y : tensor<1x4x4x4xf32>
}

// -----

func.func @slice_axis_range(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x6x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: axis 4 out of range for rank 4 (axes 1 to 3 may be sliced)
  %y = tconv.slice %x axis 4 start 0 size 1 : (tensor<1x8x6x4xf32>) -> tensor<1x8x6x4xf32>
  func.return %y : tensor<1x8x6x4xf32>
}

// -----

func.func @slice_batch(%x: tensor<2x8x6x4xf32>) -> tensor<1x8x6x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: axis 0 is the batch, which may not be sliced (a network runs at any batch)
  %y = tconv.slice %x axis 0 start 0 size 1 : (tensor<2x8x6x4xf32>) -> tensor<1x8x6x4xf32>
  func.return %y : tensor<1x8x6x4xf32>
}

// -----

func.func @slice_past_end(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x3x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: [4, 7) out of range for extent 6 of axis 2 (input 1x8x6x4)
  %y = tconv.slice %x axis 2 start 4 size 3 : (tensor<1x8x6x4xf32>) -> tensor<1x8x3x4xf32>
  func.return %y : tensor<1x8x3x4xf32>
}

// -----

func.func @slice_negative_start(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x2x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: start must be non-negative, got -1
  %y = tconv.slice %x axis 2 start -1 size 2 : (tensor<1x8x6x4xf32>) -> tensor<1x8x2x4xf32>
  func.return %y : tensor<1x8x2x4xf32>
}

// -----

func.func @slice_negative_size(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x6x1xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: size must be positive, got -1 (a tensor has no empty extent)
  %y = tconv.slice %x axis 3 start 2 size -1 : (tensor<1x8x6x4xf32>) -> tensor<1x8x6x1xf32>
  func.return %y : tensor<1x8x6x1xf32>
}

// -----

func.func @slice_empty(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x1x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: size must be positive, got 0 (a tensor has no empty extent)
  %y = tconv.slice %x axis 2 start 2 size 0 : (tensor<1x8x6x4xf32>) -> tensor<1x8x1x4xf32>
  func.return %y : tensor<1x8x1x4xf32>
}

// -----

func.func @slice_result(%x: tensor<1x8x6x4xf32>) -> tensor<1x8x3x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: slice: result shape 1x8x3x4 does not match the inferred shape 1x8x2x4
  %y = tconv.slice %x axis 2 start 2 size 2 : (tensor<1x8x6x4xf32>) -> tensor<1x8x3x4xf32>
  func.return %y : tensor<1x8x3x4xf32>
}

// -----

func.func @shuffle_groups(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: channel_shuffle: channels 8 not divisible by groups 3
  %y = tconv.channel_shuffle %x groups 3 : tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @param_unknown_init() -> tensor<8x8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param 'w': unknown init 'xavier_uniform' (expected one of kaiming_normal, ones, zeros)
  %w = tconv.param "w" init xavier_uniform : tensor<8x8xf32>
  func.return %w : tensor<8x8xf32>
}

// -----

func.func @param_kaiming_rank_1() -> tensor<8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param 'w': kaiming_normal needs rank >= 2, got shape 8
  %w = tconv.param "w" init kaiming_normal : tensor<8xf32>
  func.return %w : tensor<8xf32>
}

// -----

func.func @param_empty_name() -> tensor<8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param: name must not be empty
  %w = tconv.param "" init zeros : tensor<8xf32>
  func.return %w : tensor<8xf32>
}

// -----

func.func @param_non_ascii_name() -> tensor<8xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param: name 'conv.wéight' must be ASCII
  %w = tconv.param "conv.wéight" init zeros : tensor<8xf32>
  func.return %w : tensor<8xf32>
}

// -----

func.func @param_duplicate_name(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %w1 = tconv.param "conv.weight" init kaiming_normal : tensor<8x8x1x1xf32>
  %y1 = tconv.conv2d %x, %w1 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param: duplicate name 'conv.weight' (first defined at {{.*}}invalid.mlir:[[# @LINE - 2]]:3)
  %w2 = tconv.param "conv.weight" init kaiming_normal : tensor<8x8x1x1xf32>
  %y2 = tconv.conv2d %y1, %w2 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  func.return %y2 : tensor<1x8x4x4xf32>
}

// -----

func.func @element_type_f16(%x: tensor<1x8x4x4xf16>) -> tensor<1x8x4x4xf16> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: relu: operand 0 must have element type f32, got f16
  %y = tconv.relu %x : tensor<1x8x4x4xf16>
  func.return %y : tensor<1x8x4x4xf16>
}

// -----

func.func @param_element_type(%x: tensor<2x8xf32>) -> tensor<4x8xi32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: param: result must have element type f32, got i32
  %w = tconv.param "fc.weight" init kaiming_normal : tensor<4x8xi32>
  func.return %w : tensor<4x8xi32>
}

// -----

func.func @dynamic_shape(%x: tensor<?x8x4x4xf32>) -> tensor<?x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: relu: operand 0 must have a static positive shape, got tensor<?x8x4x4xf32>
  %y = tconv.relu %x : tensor<?x8x4x4xf32>
  func.return %y : tensor<?x8x4x4xf32>
}

// -----

func.func @schedule_unknown_loop(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: cannot tile unknown loop 'oq' (loops: n, g, oc, oh, ow, ic, kh, kw)
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oq = [4]}} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @schedule_vectorized_reduction(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: cannot vectorize reduction loop 'kw' (vectorize a data-parallel loop)
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {vectorize = "kw"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @schedule_vector_not_innermost(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: the vectorized loop 'oc.1' must be innermost (the order ends with 'kw')
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [4]}, vectorize = "oc.1"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @schedule_parallel_reduction(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: cannot run reduction loop 'ic' in parallel
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {parallel = ["ic"]} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @schedule_zero_factor(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: tile factors of 'ow' must be at least 1, got {{\[}}0{{\]}}
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {ow = [0]}} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @schedule_unknown_key(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: unknown key 'split' (expected tile, order, vectorize, unroll, parallel, layout, algorithm)
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {split = 2 : i64} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @use_before_def(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: operand 0 (%b) is used before its definition at {{.*}}invalid.mlir:[[# @LINE + 2]]:3
  %a = tconv.relu %b : tensor<1x8x4x4xf32>
  %b = tconv.relu %x : tensor<1x8x4x4xf32>
  func.return %a : tensor<1x8x4x4xf32>
}

// -----

func.func @self_use(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: operand 1 (%a) is a result of this op itself
  %a = tconv.add %x, %a : tensor<1x8x4x4xf32>
  func.return %a : tensor<1x8x4x4xf32>
}

// -----

func.func @redefined(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  func.return %x : tensor<1x8x4x4xf32>
}
// CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:1: error: redefinition of symbol '@redefined' (first defined at {{.*}}invalid.mlir:[[# @LINE - 3]]:1)
func.func @redefined(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  func.return %x : tensor<1x8x4x4xf32>
}

// -----

// CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:1: error: argument 0 (tensor<1x2147483648xf32>): dimension 2147483648 exceeds the limit of 2147483647
func.func @dimension_limit(%x: tensor<1x2147483648xf32>) -> tensor<1x2147483648xf32> {
  func.return %x : tensor<1x2147483648xf32>
}

// -----

func.func @tensor_limit(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: result 0 (tensor<65536x65536xf32>): 4294967296 elements exceed the limit of 2147483647 per tensor (set TCONV_MAX_TENSOR_ELEMENTS to raise it)
  %w = tconv.param "w" init zeros : tensor<65536x65536xf32>
  func.return %x : tensor<1x8x4x4xf32>
}

// -----

func.func @parameter_limit(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %w = tconv.param "w" init zeros : tensor<16384x16384xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: the parameters total 268435457 elements, over the limit of 268435456 (set TCONV_MAX_PARAMS to raise it)
  %b = tconv.param "b" init zeros : tensor<1xf32>
  func.return %x : tensor<1x8x4x4xf32>
}

// -----

func.func @conv_nonzeros_range(%x: tensor<1x4x6x6xf32>) -> tensor<1x8x6x6xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x4x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: nonzeros must lie in [1, 36] (the weights of one output channel), got 37
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 nonzeros 37 : (tensor<1x4x6x6xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x6x6xf32>
  func.return %y : tensor<1x8x6x6xf32>
}

// -----

func.func @conv_sparse_without_nonzeros(%x: tensor<1x4x6x6xf32>) -> tensor<1x8x6x6xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x4x3x3xf32>
  // CHECK: {{.*}}invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: algorithm sparse runs on the nonzero weights a convolution declares (nonzeros, set by tconv-sparsify); this one declares none
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "sparse"} : (tensor<1x4x6x6xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x6x6xf32>
  func.return %y : tensor<1x8x6x6xf32>
}
