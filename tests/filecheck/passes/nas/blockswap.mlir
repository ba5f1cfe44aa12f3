// tconv-blockswap gives each residual block a cheaper block type: it samples
// networks within 2.5% of the parameter budget and keeps the one with the
// highest Fisher potential. With a fixed seed the choice is deterministic.

// RUN: tconv-opt %s -p 'tconv-blockswap{budget=0.3 samples=4 batch=4}' 2>&1 | filecheck %s
// RUN: xdsl-opt %s -p 'tconv-blockswap{budget=0.3 samples=4 batch=4}' | filecheck %s --check-prefix=XDSL
// RUN: tconv-opt %s -p 'tconv-blockswap{budget=0.5 samples=4 batch=4 layers="layer2.*"}' 2>&1 | filecheck %s --check-prefix=PICK
// RUN: not tconv-opt %s -p 'tconv-blockswap{budget=0.05}' 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not tconv-opt %s -p 'tconv-blockswap{budget=2.5}' 2>&1 | filecheck %s --check-prefix=COUNT
// RUN: not tconv-opt %s -p 'tconv-blockswap{budget=0.5 layers="layer3.0.conv1"}' 2>&1 | filecheck %s --check-prefix=UNKNOWN

func.func @two_blocks(%x: tensor<1x4x8x8xf32>) -> tensor<1x10xf32> {
  %v1 = tconv.param "conv1.weight" init kaiming_normal : tensor<8x4x3x3xf32>
  %stem = tconv.conv2d %x, %v1 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x4x8x8xf32>, tensor<8x4x3x3xf32>) -> tensor<1x8x8x8xf32>
  %v3 = tconv.param "bn1.weight" init ones : tensor<8xf32>
  %v4 = tconv.param "bn1.bias" init zeros : tensor<8xf32>
  %v5 = tconv.param "bn1.running_mean" init zeros : tensor<8xf32>
  %v6 = tconv.param "bn1.running_var" init ones : tensor<8xf32>
  %v7 = tconv.batch_norm %stem, %v3, %v4, %v5, %v6 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %v8 = tconv.relu %v7 : tensor<1x8x8x8xf32>
  %w11 = tconv.param "layer1.0.conv1.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %c11 = tconv.conv2d %v8, %w11 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  %v11 = tconv.param "layer1.0.bn1.weight" init ones : tensor<8xf32>
  %v12 = tconv.param "layer1.0.bn1.bias" init zeros : tensor<8xf32>
  %v13 = tconv.param "layer1.0.bn1.running_mean" init zeros : tensor<8xf32>
  %v14 = tconv.param "layer1.0.bn1.running_var" init ones : tensor<8xf32>
  %v15 = tconv.batch_norm %c11, %v11, %v12, %v13, %v14 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %v16 = tconv.relu %v15 : tensor<1x8x8x8xf32>
  %w12 = tconv.param "layer1.0.conv2.weight" init kaiming_normal : tensor<8x8x3x3xf32>
  %c12 = tconv.conv2d %v16, %w12 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  %v19 = tconv.param "layer1.0.bn2.weight" init ones : tensor<8xf32>
  %v20 = tconv.param "layer1.0.bn2.bias" init zeros : tensor<8xf32>
  %v21 = tconv.param "layer1.0.bn2.running_mean" init zeros : tensor<8xf32>
  %v22 = tconv.param "layer1.0.bn2.running_var" init ones : tensor<8xf32>
  %v23 = tconv.batch_norm %c12, %v19, %v20, %v21, %v22 epsilon 1.000000e-05 : (tensor<1x8x8x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x8x8x8xf32>
  %a1 = tconv.add %v23, %v8 : tensor<1x8x8x8xf32>
  %r1 = tconv.relu %a1 : tensor<1x8x8x8xf32>
  %w21 = tconv.param "layer2.0.conv1.weight" init kaiming_normal : tensor<16x8x3x3xf32>
  %c21 = tconv.conv2d %r1, %w21 strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x4x4xf32>
  %v28 = tconv.param "layer2.0.bn1.weight" init ones : tensor<16xf32>
  %v29 = tconv.param "layer2.0.bn1.bias" init zeros : tensor<16xf32>
  %v30 = tconv.param "layer2.0.bn1.running_mean" init zeros : tensor<16xf32>
  %v31 = tconv.param "layer2.0.bn1.running_var" init ones : tensor<16xf32>
  %v32 = tconv.batch_norm %c21, %v28, %v29, %v30, %v31 epsilon 1.000000e-05 : (tensor<1x16x4x4xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
  %v33 = tconv.relu %v32 : tensor<1x16x4x4xf32>
  %w22 = tconv.param "layer2.0.conv2.weight" init kaiming_normal : tensor<16x16x3x3xf32>
  %c22 = tconv.conv2d %v33, %w22 strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x16x4x4xf32>, tensor<16x16x3x3xf32>) -> tensor<1x16x4x4xf32>
  %v36 = tconv.param "layer2.0.bn2.weight" init ones : tensor<16xf32>
  %v37 = tconv.param "layer2.0.bn2.bias" init zeros : tensor<16xf32>
  %v38 = tconv.param "layer2.0.bn2.running_mean" init zeros : tensor<16xf32>
  %v39 = tconv.param "layer2.0.bn2.running_var" init ones : tensor<16xf32>
  %v40 = tconv.batch_norm %c22, %v36, %v37, %v38, %v39 epsilon 1.000000e-05 : (tensor<1x16x4x4xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
  %ws = tconv.param "layer2.0.shortcut.0.weight" init kaiming_normal : tensor<16x8x1x1xf32>
  %cs = tconv.conv2d %r1, %ws strides [2, 2] padding [0, 0, 0, 0] dilations [1, 1] groups 1 : (tensor<1x8x8x8xf32>, tensor<16x8x1x1xf32>) -> tensor<1x16x4x4xf32>
  %v43 = tconv.param "layer2.0.shortcut.1.weight" init ones : tensor<16xf32>
  %v44 = tconv.param "layer2.0.shortcut.1.bias" init zeros : tensor<16xf32>
  %v45 = tconv.param "layer2.0.shortcut.1.running_mean" init zeros : tensor<16xf32>
  %v46 = tconv.param "layer2.0.shortcut.1.running_var" init ones : tensor<16xf32>
  %v47 = tconv.batch_norm %cs, %v43, %v44, %v45, %v46 epsilon 1.000000e-05 : (tensor<1x16x4x4xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16x4x4xf32>
  %a2 = tconv.add %v40, %v47 : tensor<1x16x4x4xf32>
  %v49 = tconv.relu %a2 : tensor<1x16x4x4xf32>
  %v50 = tconv.global_avg_pool %v49 : (tensor<1x16x4x4xf32>) -> tensor<1x16x1x1xf32>
  %v51 = tconv.flatten %v50 : (tensor<1x16x1x1xf32>) -> tensor<1x16xf32>
  %v52 = tconv.param "linear.weight" init kaiming_normal : tensor<10x16xf32>
  %v53 = tconv.param "linear.bias" init zeros : tensor<10xf32>
  %logits = tconv.dense %v51, %v52, %v53 : (tensor<1x16xf32>, tensor<10x16xf32>, tensor<10xf32>) -> tensor<1x10xf32>
  func.return %logits : tensor<1x10xf32>
}

// The remark names each block's type; both blocks become bottlenecks (b4: 1x1
// down to 8/4 = 2 channels, 3x3, 1x1 up; b2g4: down to 16/2 = 8, 3x3 in 4 groups).
// CHECK:      remark: tconv-blockswap: layer1.0.conv1=b4, layer2.0.conv1=b2g4; 1,602 parameters (budget 1,601 ± 2.5%, original 5,338); fisher {{.*}}, the best of 4 in-budget networks
// CHECK:      %stem = tconv.conv2d %x, %v1 {{.*}} groups 1
// CHECK:      "layer1.0.conv1_down.weight" init kaiming_normal : tensor<2x8x1x1xf32>
// CHECK-NEXT: %[[DOWN:.*]] = tconv.conv2d %v8, %{{.*}} strides [1, 1] padding [0, 0, 0, 0]
// CHECK-NEXT: "layer1.0.conv1_mid.weight" init kaiming_normal : tensor<2x2x3x3xf32>
// CHECK-NEXT: %[[MID:.*]] = tconv.conv2d %[[DOWN]], %{{.*}} padding [1, 1, 1, 1] dilations [1, 1] groups 1
// CHECK-NEXT: "layer1.0.conv1_up.weight" init kaiming_normal : tensor<8x2x1x1xf32>
// CHECK-NEXT: %c11 = tconv.conv2d %[[MID]], {{.*}} -> tensor<1x8x8x8xf32>
// CHECK:      "layer1.0.conv2_mid.weight" init kaiming_normal : tensor<2x2x3x3xf32>
// CHECK:      %c12 = tconv.conv2d {{.*}} -> tensor<1x8x8x8xf32>
// CHECK:      %a1 = tconv.add
// CHECK:      "layer2.0.conv1_down.weight" init kaiming_normal : tensor<8x8x1x1xf32>
// CHECK:      "layer2.0.conv1_mid_g4.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// CHECK-NEXT: tconv.conv2d {{.*}} strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x8x8x8xf32>, tensor<8x2x3x3xf32>) -> tensor<1x8x4x4xf32>
// CHECK:      "layer2.0.conv1_up.weight" init kaiming_normal : tensor<16x8x1x1xf32>
// CHECK-NEXT: %c21 = tconv.conv2d {{.*}} -> tensor<1x16x4x4xf32>
// CHECK:      "layer2.0.conv2_mid_g4.weight" init kaiming_normal : tensor<8x2x3x3xf32>
// CHECK:      %c22 = tconv.conv2d {{.*}} -> tensor<1x16x4x4xf32>
// CHECK:      %cs = tconv.conv2d %r1, %ws strides [2, 2]

// The original weights are gone (plain xdsl-opt runs the pass too).
// XDSL-NOT:   "layer1.0.conv{{[12]}}.weight"
// XDSL:       "layer1.0.conv2_up.weight"
// XDSL-NOT:   "layer2.0.conv{{[12]}}.weight"
// XDSL:       "layer2.0.conv2_up.weight"

// Only layer2.0 is a candidate; at half the parameters only its b2g4 fits.
// PICK:       remark: tconv-blockswap: layer2.0.conv1=b2g4; 2,618 parameters {{.*}} the best of 1 in-budget networks
// PICK:       %c11 = tconv.conv2d %v8, %w11 {{.*}} groups 1
// PICK:       %c12 = tconv.conv2d %v16, %w12 {{.*}} groups 1
// PICK:       "layer2.0.conv1_mid_g4.weight"

// RANGE:      error: tconv-blockswap: no network within 260 to 274 parameters (budget ± 2.5%): the block types reach 1,126 to 5,338 parameters (21.1% to 100.0% of the original 5,338)
// COUNT:      error: tconv-blockswap: budget 2.5 is above 1, so it is a parameter count, and must be a whole number
// UNKNOWN:    error: tconv-blockswap: unknown block 'layer3.0.conv1' (the residual blocks are: layer1.0.conv1, layer2.0.conv1)
