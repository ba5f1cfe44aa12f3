// tconv-sparsify prunes each selected convolution's weight to a density in
// the parameter store and declares its fullest output channel's count of
// nonzero weights (`nonzeros`): per layer, ceil(density x C/G x KH x KW);
// globally, whatever one threshold leaves. Shapes and other ops stay.

// RUN: tconv-opt %s -p 'tconv-sparsify{density=0.1}' | filecheck %s
// RUN: tconv-opt %s -p 'tconv-sparsify{density=0.5 layers="b"}' | filecheck %s --check-prefix=LAYERS
// RUN: tconv-opt %s -p 'tconv-sparsify{density=0.25 scope=global}' | filecheck %s --check-prefix=GLOBAL
// RUN: not tconv-opt %s -p 'tconv-sparsify{density=0}' 2>&1 | filecheck %s --check-prefix=DENSITY
// RUN: not tconv-opt %s -p 'tconv-sparsify{scope=row}' 2>&1 | filecheck %s --check-prefix=SCOPE

func.func @net(%x: tensor<1x8x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %w = tconv.param "a.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x6x6xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x6x6xf32>
  %r = tconv.relu %y : tensor<1x16x6x6xf32>
  %w2 = tconv.param "b.weight" init kaiming_normal : tensor<4x16x1x1xf32>
  %b2 = tconv.param "b.bias" init zeros : tensor<4xf32>
  %z = tconv.conv2d %r, %w2, %b2 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x16x6x6xf32>, tensor<4x16x1x1xf32>, tensor<4xf32>) -> tensor<1x4x6x6xf32>
  func.return %z : tensor<1x4x6x6xf32>
}

// CHECK:      %w = tconv.param "a.weight" init kaiming_normal : tensor<16x8x3x3xf32>
// CHECK-NEXT: %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 nonzeros 8 : (tensor<1x8x6x6xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x6x6xf32>
// CHECK-NEXT: %r = tconv.relu %y
// CHECK:      %z = tconv.conv2d %r, %w2, %b2 strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1 nonzeros 2 :

// LAYERS:     %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 :
// LAYERS:     %z = tconv.conv2d {{.*}} groups 1 nonzeros 8 :

// GLOBAL:     %y = tconv.conv2d {{.*}} groups 1 nonzeros {{[0-9]+}} :
// GLOBAL:     %z = tconv.conv2d {{.*}} groups 1 nonzeros {{[0-9]+}} :

// DENSITY: tconv-sparsify: density must lie in (0, 1], got 0
// SCOPE: tconv-sparsify: scope must be layer or global, got 'row'
