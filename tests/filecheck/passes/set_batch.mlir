// tconv-set-batch gives every function argument a new batch size and
// re-infers the result types downstream, up to the function's signature.

// RUN: tconv-opt %s --split-input-file -p 'tconv-set-batch{batch=8}' | filecheck %s
// RUN: tconv-opt %s --split-input-file -p 'tconv-set-batch{batch=1}' | filecheck %s --check-prefix=SAME
// RUN: xdsl-opt %s --split-input-file -p 'tconv-set-batch{batch=8}' | filecheck %s
// RUN: not tconv-opt %s --split-input-file -p 'tconv-set-batch{batch=0}' 2>&1 | filecheck %s --check-prefix=ZERO
// RUN: not tconv-opt %s -p 'tconv-set-batch{batch=-3}' 2>&1 | filecheck %s --check-prefix=NEGATIVE
// RUN: not tconv-opt %s -p tconv-set-batch 2>&1 | filecheck %s --check-prefix=MISSING

// ZERO:     error: tconv-set-batch: batch must be a positive integer, got 0
// NEGATIVE: error: tconv-set-batch: batch must be a positive integer, got -3
// NEGATIVE-NOT: Traceback
// MISSING:  error: tconv-set-batch needs option 'batch' (int): tconv-set-batch{batch=...}

func.func @classifier(%x: tensor<1x3x8x8xf32>) -> tensor<1x10xf32> {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x3x3x3xf32>
  %b = tconv.param "conv.bias" init zeros : tensor<4xf32>
  %y = tconv.conv2d %x, %w, %b strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
  %scale = tconv.param "bn.weight" init ones : tensor<4xf32>
  %shift = tconv.param "bn.bias" init zeros : tensor<4xf32>
  %mean = tconv.param "bn.running_mean" init zeros : tensor<4xf32>
  %var = tconv.param "bn.running_var" init ones : tensor<4xf32>
  %bn = tconv.batch_norm %y, %scale, %shift, %mean, %var epsilon 1.000000e-05 : (tensor<1x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
  %r = tconv.relu %bn : tensor<1x4x4x4xf32>
  %p = tconv.max_pool2d %r kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x4x4x4xf32>) -> tensor<1x4x2x2xf32>
  %g = tconv.global_avg_pool %p : (tensor<1x4x2x2xf32>) -> tensor<1x4x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x4xf32>
  %o = tconv.dense %f, %fw : (tensor<1x4xf32>, tensor<10x4xf32>) -> tensor<1x10xf32>
  func.return %o : tensor<1x10xf32>
}

// CHECK:      func.func @classifier(%x: tensor<8x3x8x8xf32>) -> tensor<8x10xf32> {
// CHECK-NEXT:   %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x3x3x3xf32>
// CHECK-NEXT:   %b = tconv.param "conv.bias" init zeros : tensor<4xf32>
// CHECK-NEXT:   %y = tconv.conv2d %x, %w, %b strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<8x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<8x4x4x4xf32>
// CHECK-NEXT:   %scale = tconv.param "bn.weight" init ones : tensor<4xf32>
// CHECK-NEXT:   %shift = tconv.param "bn.bias" init zeros : tensor<4xf32>
// CHECK-NEXT:   %mean = tconv.param "bn.running_mean" init zeros : tensor<4xf32>
// CHECK-NEXT:   %var = tconv.param "bn.running_var" init ones : tensor<4xf32>
// CHECK-NEXT:   %bn = tconv.batch_norm %y, %scale, %shift, %mean, %var epsilon 1.000000e-05 : (tensor<8x4x4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<8x4x4x4xf32>
// CHECK-NEXT:   %r = tconv.relu %bn : tensor<8x4x4x4xf32>
// CHECK-NEXT:   %p = tconv.max_pool2d %r kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<8x4x4x4xf32>) -> tensor<8x4x2x2xf32>
// CHECK-NEXT:   %g = tconv.global_avg_pool %p : (tensor<8x4x2x2xf32>) -> tensor<8x4x1x1xf32>
// CHECK-NEXT:   %f = tconv.flatten %g : (tensor<8x4x1x1xf32>) -> tensor<8x4xf32>
// CHECK-NEXT:   %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x4xf32>
// CHECK-NEXT:   %o = tconv.dense %f, %fw : (tensor<8x4xf32>, tensor<10x4xf32>) -> tensor<8x10xf32>
// CHECK-NEXT:   func.return %o : tensor<8x10xf32>
// CHECK-NEXT: }

// SAME:      func.func @classifier(%x: tensor<1x3x8x8xf32>) -> tensor<1x10xf32> {
// SAME:        %o = tconv.dense %f, %fw : (tensor<1x4xf32>, tensor<10x4xf32>) -> tensor<1x10xf32>

// -----

// Two inputs, a residual add, channel surgery and a concatenation along the batch axis.

func.func @two_inputs(%a: tensor<2x8x4x4xf32>, %b: tensor<3x8x4x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<6x4x4x4xf32>) {
  %sum = tconv.add %a, %a : tensor<2x8x4x4xf32>
  %s = tconv.slice_channels %b start 2 size 4 : (tensor<3x8x4x4xf32>) -> tensor<3x4x4x4xf32>
  %sh = tconv.channel_shuffle %s groups 2 : tensor<3x4x4x4xf32>
  %cat = tconv.concat %sh, %sh axis 0 : (tensor<3x4x4x4xf32>, tensor<3x4x4x4xf32>) -> tensor<6x4x4x4xf32>
  func.return %sum, %cat : tensor<2x8x4x4xf32>, tensor<6x4x4x4xf32>
}

// CHECK:      func.func @two_inputs(%a: tensor<8x8x4x4xf32>, %b: tensor<8x8x4x4xf32>) -> (tensor<8x8x4x4xf32>, tensor<16x4x4x4xf32>) {
// CHECK-NEXT:   %sum = tconv.add %a, %a : tensor<8x8x4x4xf32>
// CHECK-NEXT:   %s = tconv.slice_channels %b start 2 size 4 : (tensor<8x8x4x4xf32>) -> tensor<8x4x4x4xf32>
// CHECK-NEXT:   %sh = tconv.channel_shuffle %s groups 2 : tensor<8x4x4x4xf32>
// CHECK-NEXT:   %cat = tconv.concat %sh, %sh axis 0 : (tensor<8x4x4x4xf32>, tensor<8x4x4x4xf32>) -> tensor<16x4x4x4xf32>
// CHECK-NEXT:   func.return %sum, %cat : tensor<8x8x4x4xf32>, tensor<16x4x4x4xf32>
// CHECK-NEXT: }

// SAME:      func.func @two_inputs(%a: tensor<1x8x4x4xf32>, %b: tensor<1x8x4x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<2x4x4x4xf32>) {
