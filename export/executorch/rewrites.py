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
decoder ran on portable kernels); it is a mean, a subtraction, a mean of squares, a reciprocal
square root and the affine, each mean taken as XNNPACK's global average pooling (a mean over the
last two axes of a 4-D tensor). Each mean is taken in stages (over a row, over the rows of a
channel, over the channels of a group), not as one mean over the whole group: XNNPACK accumulates
a pooling in one float32 running sum, whose error grows with the count it sums. One pooling over a
group of 6 x 128 x 128 values put a single group norm 1e-5 off float64 (torch: 8e-8), and the
guided decoder's focus-depth head (20 group norms) 3.5e-5 off, enough to fail the decoder's 1e-4
fp32 gate; staged, the group norm is 1.4e-7 off and the head 1.4e-6. Layer norms over the last
axis are one mean over that axis (at most a few thousand values), viewed as [.., D, 1].
"""
from __future__ import annotations

import math

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


def _group_means(x, num_groups):
    """[N, C, *S] -> [N, G, 1, 1] means per group: over the innermost axis, then over the other
    positions of a channel, then over the channels of a group (why staged: the module docstring)."""
    n, c, last = x.shape[0], x.shape[1], x.shape[-1]
    rest = math.prod(x.shape[2:-1])
    m = aten.mean.dim(x.reshape(n, c * rest, last, 1), [2, 3], True)
    m = aten.mean.dim(m.reshape(n, c, rest, 1), [2, 3], True)
    return aten.mean.dim(m.reshape(n, num_groups, c // num_groups, 1), [2, 3], True)


def group_norm_as_means(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[0], x.shape[1]
    grouped = [n, num_groups, c // num_groups, *x.shape[2:]]
    per_group = [n, num_groups] + [1] * (x.dim() - 1)  # a group's statistic, broadcast over its values
    centred = (x.reshape(grouped) - _group_means(x, num_groups).reshape(per_group)).reshape(x.shape)
    var = _group_means(centred * centred, num_groups)
    y = (centred.reshape(grouped) * aten.rsqrt.default(var + eps).reshape(per_group)).reshape(x.shape)
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
