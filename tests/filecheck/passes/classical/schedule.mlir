// The schedule passes write loop transformations into each selected
// convolution's schedule; rule-breaking results fail with the layer and rule.

// RUN: tconv-opt %s -p 'tconv-tile{loop=oc factors=8},tconv-tile{loop=ow factors=4 layers=conv1}' | filecheck %s --check-prefix=TILE
// RUN: tconv-opt %s -p 'tconv-tile{loop=oc factors=8},tconv-tile{loop=ow factors=4},tconv-reorder{order="n,g,oc.0,oh,ow.0,ic,kh,kw,ow.1,oc.1"},tconv-vectorize{loop="oc.1"},tconv-unroll{loops="kh,kw,ow.1"},tconv-parallel{loops="n,g,oc.0,oh"}' | filecheck %s --check-prefix=TEMPLATE
// RUN: xdsl-opt %s -p 'tconv-unroll{loops=kw layers="conv*"}' | filecheck %s --check-prefix=UNROLL
// RUN: not tconv-opt %s -p 'tconv-vectorize{loop=ic}' 2>&1 | filecheck %s --check-prefix=REDUCTION
// RUN: not tconv-opt %s -p 'tconv-tile{loop=oq factors=4}' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not tconv-opt %s -p 'tconv-tile{loop=oc factors=4},tconv-vectorize{loop="oc.1"}' 2>&1 | filecheck %s --check-prefix=INNERMOST
// RUN: not tconv-opt %s -p 'tconv-parallel{loops="g,n"}' 2>&1 | filecheck %s --check-prefix=PREFIX
// RUN: not tconv-opt %s -p 'tconv-tile{loop=oc factors=0}' 2>&1 | filecheck %s --check-prefix=FACTORS
// RUN: tconv-opt %s -p 'tconv-tile{loop=ow factors=2,4 layers=conv2}' | filecheck %s --check-prefix=TWICE
// RUN: not tconv-opt %s -p 'tconv-unroll{loops=kw layers=conv9}' 2>&1 | filecheck %s --check-prefix=LAYER

func.func @net(%x: tensor<1x8x8x8xf32>) -> tensor<1x16x8x8xf32> {
  %w1 = tconv.param "conv1.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %y = tconv.conv2d %x, %w1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x8x8xf32>
  %w2 = tconv.param "conv2.weight" init kaiming_normal : tensor<16x4x3x3xf32>
  %z = tconv.conv2d %y, %w2 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x16x8x8xf32>, tensor<16x4x3x3xf32>) -> tensor<1x16x8x8xf32>
  func.return %z : tensor<1x16x8x8xf32>
}

// TILE:      %y = tconv.conv2d %x, %w1 {{.*}} groups 1 schedule {tile = {oc = [8 : i64], ow = [4 : i64]}} :
// TILE:      %z = tconv.conv2d %y, %w2 {{.*}} groups 4 schedule {tile = {oc = [8 : i64]}} :

// TEMPLATE:  %z = tconv.conv2d %y, %w2 {{.*}} groups 4 schedule {tile = {oc = [8 : i64], ow = [4 : i64]}, order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"], vectorize = "oc.1", unroll = ["kh", "kw", "ow.1"], parallel = ["n", "g", "oc.0", "oh"]} :

// UNROLL:    %y = tconv.conv2d %x, %w1 {{.*}} schedule {unroll = ["kw"]} :
// UNROLL:    %z = tconv.conv2d %y, %w2 {{.*}} schedule {unroll = ["kw"]} :

// REDUCTION: error: tconv-vectorize: layer 'conv1': schedule: cannot vectorize reduction loop 'ic' (vectorize a data-parallel loop)
// UNKNOWN:   error: tconv-tile: layer 'conv1': schedule: cannot tile unknown loop 'oq' (loops: n, g, oc, oh, ow, ic, kh, kw)
// INNERMOST: error: tconv-vectorize: layer 'conv1': schedule: the vectorized loop 'oc.1' must be innermost (the order ends with 'kw')
// PREFIX:    error: tconv-parallel: layer 'conv1': schedule: parallel loops must be the outermost ones, in order (n, g)
// FACTORS:   error: tconv-tile: layer 'conv1': schedule: tile factors of 'oc' must be at least 1, got [0]
// TWICE:     %z = tconv.conv2d %y, %w2 {{.*}} schedule {tile = {ow = [2 : i64, 4 : i64]}} :
// LAYER:     error: tconv-unroll: unknown layer 'conv9' (the convolutions are: conv1, conv2)
