// The verifier's rules of a schedule's `algorithm`: each fails with the
// rule's message at the position of the op that breaks it.

// RUN: tconv-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @winograd_does_not_apply(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x4x4xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}algorithm_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: algorithm winograd computes 3x3 convolutions of stride 1, dilation 1 and padding 1 on every side; this one is 3x3, stride 2x2, padding 1, 1, 1, 1, dilation 1x1
  %y = tconv.conv2d %x, %w strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "winograd"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @unknown_algorithm(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}algorithm_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: `algorithm` must be one of "direct", "winograd", "gspc", "sparse", got 'fft'
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "fft"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @winograd_with_loop_entries(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}algorithm_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: algorithm winograd runs kernels of its own and takes no loop entries, this schedule sets tile
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8]}, algorithm = "winograd"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @gspc_packed(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}algorithm_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: algorithm gspc reads and writes NCHW activations, the layout asks for NCHW / NCHW8c
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {layout = {output = "NCHW8c"}, algorithm = "gspc"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}

// -----

func.func @gspc_vectorizes_channels(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  // CHECK: {{.*}}algorithm_invalid.mlir:[[# @LINE + 1]]:3: error: conv2d: schedule: algorithm gspc vectorizes the output columns (ow.1), not 'oc.1'
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {tile = {oc = [8]}, order = ["n", "g", "oc.0", "oh", "ow", "ic", "kh", "kw", "oc.1"], vectorize = "oc.1", algorithm = "gspc"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
