// Every tconv op in its custom syntax: it parses, verifies and prints back as
// written, and survives the trip through the generic syntax unchanged.

// RUN: tconv-opt %s | filecheck %s
// RUN: xdsl-opt %s | filecheck %s
// RUN: tconv-opt %s --print-op-generic | tconv-opt | filecheck %s
// RUN: tconv-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: tconv-opt %s -o %t.custom
// RUN: tconv-opt %s --print-op-generic | tconv-opt -o %t.roundtrip
// RUN: diff %t.custom %t.roundtrip
// RUN: tconv-opt %t.custom | diff %t.custom -

func.func @convolutions(%x: tensor<1x8x16x16xf32>) -> tensor<1x8x8x17xf32> {
  %w = tconv.param "plain.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %plain = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
  %bw = tconv.param "biased.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %bb = tconv.param "biased.bias" init zeros : tensor<8xf32>
  %biased = tconv.conv2d %plain, %bw, %bb strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<1x8x16x16xf32>
  %gw = tconv.param "grouped.weight" init kaiming_normal : tensor<8x2x3x3xf32>
  %grouped = tconv.conv2d %biased, %gw strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 nonzeros 5 : (tensor<1x8x16x16xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x16x16xf32>
  %dw = tconv.param "dilated.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %dilated = tconv.conv2d %grouped, %dw strides [1, 1] padding [2, 2, 2, 2] dilations [2, 2] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
  %aw = tconv.param "asymmetric.weight" init kaiming_normal : tensor<8x8x3x1xf32>
  %asymmetric = tconv.conv2d %dilated, %aw strides [2, 1] padding [0, 1, 2, 0] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x1xf32>) -> tensor<1x8x8x17xf32>
  %sw = tconv.param "scheduled.weight" init kaiming_normal : tensor<8x8x1x1xf32>
  %scheduled = tconv.conv2d %asymmetric, %sw strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 schedule {tile = {oc = [8], ow = [6]}, order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"], vectorize = "oc.1", unroll = ["kh", "kw", "ow.1"], parallel = ["n", "g", "oc.0", "oh"]} : (tensor<1x8x8x17xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x8x17xf32>
  func.return %scheduled : tensor<1x8x8x17xf32>
}

// CHECK:      func.func @convolutions(%x: tensor<1x8x16x16xf32>) -> tensor<1x8x8x17xf32> {
// CHECK-NEXT:   %w = tconv.param "plain.weight" init kaiming_normal : tensor<8x8x3x3xf32>
// CHECK-NEXT:   %plain = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
// CHECK-NEXT:   %bw = tconv.param "biased.weight" init kaiming_normal : tensor<8x8x3x3xf32>
// CHECK-NEXT:   %bb = tconv.param "biased.bias" init zeros : tensor<8xf32>
// CHECK-NEXT:   %biased = tconv.conv2d %plain, %bw, %bb strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<1x8x16x16xf32>
// CHECK-NEXT:   %gw = tconv.param "grouped.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// CHECK-NEXT:   %grouped = tconv.conv2d %biased, %gw strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 nonzeros 5 : (tensor<1x8x16x16xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x16x16xf32>
// CHECK-NEXT:   %dw = tconv.param "dilated.weight" init kaiming_normal : tensor<8x8x3x3xf32>
// CHECK-NEXT:   %dilated = tconv.conv2d %grouped, %dw strides [1, 1] padding [2, 2, 2, 2] dilations [2, 2] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
// CHECK-NEXT:   %aw = tconv.param "asymmetric.weight" init kaiming_normal : tensor<8x8x3x1xf32>
// CHECK-NEXT:   %asymmetric = tconv.conv2d %dilated, %aw strides [2, 1] padding [0, 1, 2, 0] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x1xf32>) -> tensor<1x8x8x17xf32>
// CHECK-NEXT:   %sw = tconv.param "scheduled.weight" init kaiming_normal : tensor<8x8x1x1xf32>
// CHECK-NEXT:   %scheduled = tconv.conv2d %asymmetric, %sw strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 schedule {tile = {oc = [8 : i64], ow = [6 : i64]}, order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"], vectorize = "oc.1", unroll = ["kh", "kw", "ow.1"], parallel = ["n", "g", "oc.0", "oh"]} : (tensor<1x8x8x17xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x8x17xf32>
// CHECK-NEXT:   func.return %scheduled : tensor<1x8x8x17xf32>
// CHECK-NEXT: }

// GENERIC:      "tconv.param"() <{sym_name = "plain.weight", init = "kaiming_normal"}> : () -> tensor<8x8x3x3xf32>
// GENERIC:      %scheduled = "tconv.conv2d"(%asymmetric, %sw) <{strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, groups = 1 : i64, schedule = {tile = {oc = [8 : i64], ow = [6 : i64]}, order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"], vectorize = "oc.1", unroll = ["kh", "kw", "ow.1"], parallel = ["n", "g", "oc.0", "oh"]}}> : (tensor<1x8x8x17xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x8x17xf32>
// GENERIC:      %bn = "tconv.batch_norm"(%x, %scale, %shift, %mean, %var) <{epsilon = 1.000000e-03 : f64}>
// GENERIC:      %avg_pad = "tconv.avg_pool2d"(%x) <{kernel = array<i64: 3, 3>, strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, count_include_pad}>
// GENERIC:      %cat = "tconv.concat"(%x, %y) <{axis = 1 : i64}>
// GENERIC:      %top = "tconv.slice"(%x) <{axis = 2 : i64, start = 0 : i64, size = 3 : i64}> : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>

func.func @normalisation(%x: tensor<1x8x4x4xf32>, %y: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %scale = tconv.param "bn.weight" init ones : tensor<8xf32>
  %shift = tconv.param "bn.bias" init zeros : tensor<8xf32>
  %mean = tconv.param "bn.running_mean" init zeros : tensor<8xf32>
  %var = tconv.param "bn.running_var" init ones : tensor<8xf32>
  %bn = tconv.batch_norm %x, %scale, %shift, %mean, %var epsilon 1.000000e-03 : (tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x4x4xf32>
  %relu = tconv.relu %bn : tensor<1x8x4x4xf32>
  %relu6 = tconv.relu6 %relu : tensor<1x8x4x4xf32>
  %sum = tconv.add %relu6, %y : tensor<1x8x4x4xf32>
  func.return %sum : tensor<1x8x4x4xf32>
}

// CHECK:      func.func @normalisation(%x: tensor<1x8x4x4xf32>, %y: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
// CHECK-NEXT:   %scale = tconv.param "bn.weight" init ones : tensor<8xf32>
// CHECK-NEXT:   %shift = tconv.param "bn.bias" init zeros : tensor<8xf32>
// CHECK-NEXT:   %mean = tconv.param "bn.running_mean" init zeros : tensor<8xf32>
// CHECK-NEXT:   %var = tconv.param "bn.running_var" init ones : tensor<8xf32>
// CHECK-NEXT:   %bn = tconv.batch_norm %x, %scale, %shift, %mean, %var epsilon 1.000000e-03 : (tensor<1x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x4x4xf32>
// CHECK-NEXT:   %relu = tconv.relu %bn : tensor<1x8x4x4xf32>
// CHECK-NEXT:   %relu6 = tconv.relu6 %relu : tensor<1x8x4x4xf32>
// CHECK-NEXT:   %sum = tconv.add %relu6, %y : tensor<1x8x4x4xf32>
// CHECK-NEXT:   func.return %sum : tensor<1x8x4x4xf32>
// CHECK-NEXT: }

func.func @pooling(%x: tensor<1x8x8x17xf32>) -> (tensor<1x8x4x9xf32>, tensor<1x8x4x8xf32>, tensor<1x8x8x17xf32>, tensor<1x8x1x1xf32>) {
  %max = tconv.max_pool2d %x kernel [3, 3] strides [2, 2] padding [1, 1, 1, 1] : (tensor<1x8x8x17xf32>) -> tensor<1x8x4x9xf32>
  %avg = tconv.avg_pool2d %x kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x8x8x17xf32>) -> tensor<1x8x4x8xf32>
  %avg_pad = tconv.avg_pool2d %x kernel [3, 3] strides [1, 1] padding [1, 1, 1, 1] count_include_pad : (tensor<1x8x8x17xf32>) -> tensor<1x8x8x17xf32>
  %global = tconv.global_avg_pool %x : (tensor<1x8x8x17xf32>) -> tensor<1x8x1x1xf32>
  func.return %max, %avg, %avg_pad, %global : tensor<1x8x4x9xf32>, tensor<1x8x4x8xf32>, tensor<1x8x8x17xf32>, tensor<1x8x1x1xf32>
}

// CHECK:      func.func @pooling(%x: tensor<1x8x8x17xf32>) -> (tensor<1x8x4x9xf32>, tensor<1x8x4x8xf32>, tensor<1x8x8x17xf32>, tensor<1x8x1x1xf32>) {
// CHECK-NEXT:   %max = tconv.max_pool2d %x kernel [3, 3] strides [2, 2] padding [1, 1, 1, 1] : (tensor<1x8x8x17xf32>) -> tensor<1x8x4x9xf32>
// CHECK-NEXT:   %avg = tconv.avg_pool2d %x kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x8x8x17xf32>) -> tensor<1x8x4x8xf32>
// CHECK-NEXT:   %avg_pad = tconv.avg_pool2d %x kernel [3, 3] strides [1, 1] padding [1, 1, 1, 1] count_include_pad : (tensor<1x8x8x17xf32>) -> tensor<1x8x8x17xf32>
// CHECK-NEXT:   %global = tconv.global_avg_pool %x : (tensor<1x8x8x17xf32>) -> tensor<1x8x1x1xf32>
// CHECK-NEXT:   func.return %max, %avg, %avg_pad, %global : tensor<1x8x4x9xf32>, tensor<1x8x4x8xf32>, tensor<1x8x8x17xf32>, tensor<1x8x1x1xf32>
// CHECK-NEXT: }

func.func @classifier(%x: tensor<2x8x1x1xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
  %flat = tconv.flatten %x : (tensor<2x8x1x1xf32>) -> tensor<2x8xf32>
  %w = tconv.param "fc.weight" init kaiming_normal : tensor<4x8xf32>
  %b = tconv.param "fc.bias" init zeros : tensor<4xf32>
  %fc = tconv.dense %flat, %w, %b : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %w2 = tconv.param "fc2.weight" init kaiming_normal : tensor<4x8xf32>
  %fc2 = tconv.dense %flat, %w2 : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
  func.return %fc, %fc2 : tensor<2x4xf32>, tensor<2x4xf32>
}

// CHECK:      func.func @classifier(%x: tensor<2x8x1x1xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
// CHECK-NEXT:   %flat = tconv.flatten %x : (tensor<2x8x1x1xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   %w = tconv.param "fc.weight" init kaiming_normal : tensor<4x8xf32>
// CHECK-NEXT:   %b = tconv.param "fc.bias" init zeros : tensor<4xf32>
// CHECK-NEXT:   %fc = tconv.dense %flat, %w, %b : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:   %w2 = tconv.param "fc2.weight" init kaiming_normal : tensor<4x8xf32>
// CHECK-NEXT:   %fc2 = tconv.dense %flat, %w2 : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:   func.return %fc, %fc2 : tensor<2x4xf32>, tensor<2x4xf32>
// CHECK-NEXT: }

func.func @channels(%x: tensor<1x8x4x4xf32>, %y: tensor<1x4x4x4xf32>) -> (tensor<1x8x6x4xf32>, tensor<1x6x4x4xf32>) {
  %cat = tconv.concat %x, %y axis 1 : (tensor<1x8x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x12x4x4xf32>
  %tall = tconv.concat %x, %x, %x axis 2 : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) -> tensor<1x8x12x4xf32>
  %slice = tconv.slice_channels %cat start 3 size 6 : (tensor<1x12x4x4xf32>) -> tensor<1x6x4x4xf32>
  %shuffled = tconv.channel_shuffle %slice groups 3 : tensor<1x6x4x4xf32>
  %rows = tconv.slice_channels %tall start 0 size 8 : (tensor<1x8x12x4xf32>) -> tensor<1x8x12x4xf32>
  %short = tconv.max_pool2d %rows kernel [2, 1] strides [2, 1] padding [0, 0, 0, 0] : (tensor<1x8x12x4xf32>) -> tensor<1x8x6x4xf32>
  func.return %short, %shuffled : tensor<1x8x6x4xf32>, tensor<1x6x4x4xf32>
}

// CHECK:      func.func @channels(%x: tensor<1x8x4x4xf32>, %y: tensor<1x4x4x4xf32>) -> (tensor<1x8x6x4xf32>, tensor<1x6x4x4xf32>) {
// CHECK-NEXT:   %cat = tconv.concat %x, %y axis 1 : (tensor<1x8x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x12x4x4xf32>
// CHECK-NEXT:   %tall = tconv.concat %x, %x, %x axis 2 : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) -> tensor<1x8x12x4xf32>
// CHECK-NEXT:   %slice = tconv.slice_channels %cat start 3 size 6 : (tensor<1x12x4x4xf32>) -> tensor<1x6x4x4xf32>
// CHECK-NEXT:   %shuffled = tconv.channel_shuffle %slice groups 3 : tensor<1x6x4x4xf32>
// CHECK-NEXT:   %rows = tconv.slice_channels %tall start 0 size 8 : (tensor<1x8x12x4xf32>) -> tensor<1x8x12x4xf32>
// CHECK-NEXT:   %short = tconv.max_pool2d %rows kernel [2, 1] strides [2, 1] padding [0, 0, 0, 0] : (tensor<1x8x12x4xf32>) -> tensor<1x8x6x4xf32>
// CHECK-NEXT:   func.return %short, %shuffled : tensor<1x8x6x4xf32>, tensor<1x6x4x4xf32>
// CHECK-NEXT: }

func.func @slices(%x: tensor<1x8x6x5xf32>, %v: tensor<2x10xf32>) -> (tensor<1x8x6x5xf32>, tensor<1x2x6x2xf32>, tensor<2x4xf32>) {
  %top = tconv.slice %x axis 2 start 0 size 3 : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>
  %bottom = tconv.slice %x axis 2 start 3 size 3 : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>
  %rows = tconv.concat %top, %bottom axis 2 : (tensor<1x8x3x5xf32>, tensor<1x8x3x5xf32>) -> tensor<1x8x6x5xf32>
  %cols = tconv.slice %x axis 3 start 3 size 2 : (tensor<1x8x6x5xf32>) -> tensor<1x8x6x2xf32>
  %chans = tconv.slice %cols axis 1 start 6 size 2 : (tensor<1x8x6x2xf32>) -> tensor<1x2x6x2xf32>
  %feat = tconv.slice %v axis 1 start 6 size 4 : (tensor<2x10xf32>) -> tensor<2x4xf32>
  func.return %rows, %chans, %feat : tensor<1x8x6x5xf32>, tensor<1x2x6x2xf32>, tensor<2x4xf32>
}

// CHECK:      func.func @slices(%x: tensor<1x8x6x5xf32>, %v: tensor<2x10xf32>) -> (tensor<1x8x6x5xf32>, tensor<1x2x6x2xf32>, tensor<2x4xf32>) {
// CHECK-NEXT:   %top = tconv.slice %x axis 2 start 0 size 3 : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>
// CHECK-NEXT:   %bottom = tconv.slice %x axis 2 start 3 size 3 : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>
// CHECK-NEXT:   %rows = tconv.concat %top, %bottom axis 2 : (tensor<1x8x3x5xf32>, tensor<1x8x3x5xf32>) -> tensor<1x8x6x5xf32>
// CHECK-NEXT:   %cols = tconv.slice %x axis 3 start 3 size 2 : (tensor<1x8x6x5xf32>) -> tensor<1x8x6x2xf32>
// CHECK-NEXT:   %chans = tconv.slice %cols axis 1 start 6 size 2 : (tensor<1x8x6x2xf32>) -> tensor<1x2x6x2xf32>
// CHECK-NEXT:   %feat = tconv.slice %v axis 1 start 6 size 4 : (tensor<2x10xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:   func.return %rows, %chans, %feat : tensor<1x8x6x5xf32>, tensor<1x2x6x2xf32>, tensor<2x4xf32>
// CHECK-NEXT: }
