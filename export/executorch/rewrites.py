"""Graph rewrites that let XNNPACK run more of the refocuser: exact in maths, applied to the exported
graph (the modules, shared with the PyTorch reference, are left untouched).

Temporal convolutions as 2-D convolutions.

SVD's UNet (temporal ResNet blocks) and temporal VAE decoder mix frames with Conv3d kernels of
shape (k, 1, 1): a convolution over frames only. XNNPACK has no 3-D convolution, so left as
they are they run on ExecuTorch's portable kernels, and the partitions around them end in
pass-through permutes that XNNPACK's preprocessing rejects ("Output node ... is already in the
inputs"). A (k, 1, 1) kernel over [B, C, F, H, W] is exactly a (k, 1) kernel over
[B, C, F, H*W]. Other 3-D convolutions keep their own op.

Group normalisation as means. XNNPACK has no group norm (37 of them in the UNet and in the
decoder ran on portable kernels); over [N, G, C/G, S] it is two means across the innermost two
axes (XNNPACK's global average pooling), a subtraction, a reciprocal square root and the affine.
Layer norms over the last axis likewise, that axis viewed as [.., D, 1].
"""
from __future__ import annotations

import torch

aten = torch.ops.aten


def _pair(values, n: int = 3) -> list[int]:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return values * n if len(values) == 1 else values


def conv3d_as_conv2d(x, weight, bias=None, stride=(1, 1, 1), padding=(0, 0, 0), dilation=(1, 1, 1), groups=1):
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if isinstance(padding[0], str) or tuple(weight.shape[-2:]) != (1, 1) or stride[1:] != [1, 1] \
            or padding[1:] != [0, 0]:
        return aten.convolution.default(x, weight, bias, stride, padding, dilation, False, [0, 0, 0], groups)
    b, c, f, h, w = x.shape
    y = aten.conv2d.default(x.reshape(b, c, f, h * w), weight.reshape(*weight.shape[:3], 1), bias,
                            [stride[0], 1], [padding[0], 0], [dilation[0], 1], groups)
    return y.reshape(b, y.shape[1], y.shape[2], h, w)


def group_norm_as_means(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[0], x.shape[1]
    grouped = x.reshape(n, num_groups, c // num_groups, -1)
    mean = aten.mean.dim(grouped, [2, 3], True)
    centred = grouped - mean
    var = aten.mean.dim(centred * centred, [2, 3], True)
    y = (centred * aten.rsqrt.default(var + eps)).reshape(x.shape)
    affine = [1, c] + [1] * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(affine)
    if bias is not None:
        y = y + bias.reshape(affine)
    return y


def layer_norm_as_means(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    if len(normalized_shape) != 1:
        return aten.native_layer_norm.default(x, normalized_shape, weight, bias, eps)[0]
    d = x.shape[-1]
    rows = x.reshape(1, -1, d, 1)
    mean = aten.mean.dim(rows, [2, 3], True)
    centred = rows - mean
    var = aten.mean.dim(centred * centred, [2, 3], True)
    y = (centred * aten.rsqrt.default(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rewrite_for_xnnpack(exported, group_norms: bool = True):
    """`exported` (an ExportedProgram) with (k, 1, 1) Conv3d as Conv2d over frames and group and layer
    norms as means. `group_norms=False` for graphs headed for int8: quantized after this rewrite, the
    UNet's failed XNNPACK's channels-last pass (ExecuTorch 1.5.1; the VAE encoder's passed), so int8
    programs keep their group norms on portable kernels. The weight reshapes are folded into constants: XNNPACK takes a convolution only when its
    weight is one."""
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    table = {aten.conv3d.default: conv3d_as_conv2d, aten.layer_norm.default: layer_norm_as_means}
    if group_norms:
        table[aten.group_norm.default] = group_norm_as_means
    # This graph is ATen, not yet edge: the pass's own skip list names the edge quantize/dequantize ops,
    # so the ATen ones are named here; folded, an int8 weight's dequantize would store it as float again.
    keep = {*_QUANT_PRIMITIVES, aten.full.default}
    return constant_prop_pass(exported.run_decompositions(table), custom_skip_targets=keep)
