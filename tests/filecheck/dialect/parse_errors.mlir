// Syntax errors are located diagnostics, counted in lines of the whole file,
// and none of them hangs or crashes the parser.

// RUN: tconv-opt %s --split-input-file --parsing-diagnostics | filecheck %s
// RUN: not tconv-opt %s --split-input-file 2>&1 | filecheck %s --check-prefix=FIRST

// FIRST:     {{.*}}parse_errors.mlir:{{[0-9]+}}:20: error: End of file reached before closing string literal.
// FIRST-NOT: Traceback

func.func @unterminated_string() -> tensor<8xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:20: error: End of file reached before closing string literal.
  %w = tconv.param "conv.weight init zeros : tensor<8xf32> ............................................................
  func.return %w : tensor<8xf32>
}

// -----

func.func @huge_integer(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:40: error: integer 9223372036854775808 out of range for i64 after 'groups'
  %y = tconv.channel_shuffle %x groups 9223372036854775808 : tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @huge_padding(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:66: error: integer -100000000000000000000 out of range for i64 in 'padding'
  %y = tconv.max_pool2d %x kernel [1, 1] strides [1, 1] padding [-100000000000000000000, 0, 0, 0] : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @huge_slice(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:43: error: integer 9223372036854775808 out of range for i64 after 'size'
  %y = tconv.slice %x axis 2 start 0 size 9223372036854775808 : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  func.return %y : tensor<1x8x4x4xf32>
}

// -----

func.func @missing_keyword(%x: tensor<1x8x4x4xf32>) -> tensor<1x4x4x4xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:40: error: Expected 'size' (property of this op)
  %y = tconv.slice_channels %x start 0 : (tensor<1x8x4x4xf32>) -> tensor<1x4x4x4xf32>
  func.return %y : tensor<1x4x4x4xf32>
}

// -----

func.func @huge_integer_type() -> tensor<8xf32> {
  // CHECK: {{.*}}parse_errors.mlir:[[# @LINE + 1]]:49: error: integer type width 9223372036854775807 exceeds the limit 16777215
  %w = tconv.param "w" init zeros {note = array<i9223372036854775807: 1>} : tensor<8xf32>
  func.return %w : tensor<8xf32>
}

// -----

// CHECK: {{.*}}parse_errors.mlir:{{[0-9]+}}:1: error: values used but not defined: [%w]
func.func @undefined_value() -> tensor<8xf32> {
  func.return %w : tensor<8xf32>
}

// -----

// CHECK: {{.*}}parse_errors.mlir:{{[0-9]+}}:1: error: unexpected end of input in block definition
func.func @truncated(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  %y = tconv.relu %x : tensor<1x8x4x4xf32>
