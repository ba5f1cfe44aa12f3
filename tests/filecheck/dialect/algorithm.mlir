// A convolution's schedule may name its algorithm: it parses, verifies and
// prints back as written (alone, beside a layout, beside loop entries), and
// survives the generic syntax; a schedule without it prints as before.

// RUN: tconv-opt %s | filecheck %s
// RUN: tconv-opt %s --print-op-generic | tconv-opt | filecheck %s
// RUN: tconv-opt %s -o %t.custom
// RUN: tconv-opt %t.custom | diff %t.custom -

func.func @algorithms(%x: tensor<1x16x8x8xf32>) -> tensor<1x16x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<16x16x3x3xf32>
  %a = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "winograd"} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
  %b = tconv.conv2d %a, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8], ow = [4]}, algorithm = "direct"} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
  %gw = tconv.param "gw" init kaiming_normal : tensor<16x4x3x3xf32>
  %c = tconv.conv2d %b, %gw strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 schedule {algorithm = "gspc"} : (tensor<1x16x8x8xf32>, tensor<16x4x3x3xf32>) -> tensor<1x16x8x8xf32>
  %d = tconv.conv2d %c, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8]}} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
  func.return %d : tensor<1x16x8x8xf32>
}

// CHECK:      %a = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "winograd"} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
// CHECK-NEXT: %b = tconv.conv2d %a, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8 : i64], ow = [4 : i64]}, algorithm = "direct"} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
// CHECK:      %c = tconv.conv2d %b, %gw strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 schedule {algorithm = "gspc"} : (tensor<1x16x8x8xf32>, tensor<16x4x3x3xf32>) -> tensor<1x16x8x8xf32>
// CHECK-NEXT: %d = tconv.conv2d %c, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8 : i64]}} : (tensor<1x16x8x8xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x8x8xf32>
