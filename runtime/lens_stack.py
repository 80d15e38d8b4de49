"""A focal stack built from one photo and a per-pixel focus-depth estimate, by the thin-lens model.

Why: depth from focus reads only where each pixel of a stack is sharpest. Measured on the held-out
synthetic stacks (benchmarks/reblur_oracle.py `--graded`), stacks that re-blur the photo where a frame
is farther from a pixel's focus than the photo, and unsharp-mask it by an amount growing with the
frames of focus gained where a frame is closer, rank depth as well as the true stacks (0.745 against
0.749). What such a stack needs is the pixel's focus index, and a small convolutional network reads
that from the photo and its focus position far better than the 1-step refocuser's latents carry it
(benchmarks/lens_route.py). This module holds both halves: the estimate (:class:`FocusDepthHead`)
and the synthesis (:class:`LensStack`); benchmarks/lens_route.py measures the route, training/
depth_head.py trains the head.

Geometry (focalstacks/lens.py): blur is linear in diopters, so a pixel at focus index d photographed
at position k has a disk of confusion of radius step x |k - d| px, step = the blur radius per frame of
focus (the renderer: 0.05 x width / 8). Frame j needs radius step x |j - d|. Where that is larger, the
photo gets a Gaussian of sigma step x sqrt(|j - d|^2 - |k - d|^2) / 2 (a disk of radius r has the
second moment of a Gaussian of sigma r / 2; Gaussian blurs add in quadrature); where it is smaller,
the photo plus `amount` x (|k - d| - |j - d|) times its detail photo - G(sharpen_sigma) x photo. Each
frame is the mix of these over the head's probabilities of d, so the whole synthesis is a per-pixel
linear mix of a fixed bank (the photo, its blurs, its detail): separable convolutions and weighted sums,
ops every export target takes.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from refocus_edge.runtime.gaussian import gaussian_taps

__all__ = ["FocusDepthHead", "LensStack", "LENS_BLURS"]


def _blur(x: torch.Tensor, taps: torch.Tensor, r: int) -> torch.Tensor:
    """[N, 1, H, W] -> separable Gaussian blur with replicated borders; `r` = the taps' radius, a plain int
    (read off the tensor while tracing it would become an op Core ML cannot convert)."""
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), taps.view(1, 1, -1, 1))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


class FocusDepthHead(nn.Module):
    """photo [B, 3, H, W] in [-1, 1], input position k [B] (float: exported graphs compute it), blur
    step [B] (px of blur radius per frame of focus) -> logits [B, positions, H, W] of each pixel's focus
    index (the frame that has it sharpest). H and W must be multiples of 2^(levels - 1).

    A small U-Net. Besides the photo it sees the local detail energy |g - G(s) g| of the photo's grey
    level at a few scales (how blurred each pixel is: the defocus magnitude |k - d| times the step,
    whose sign the position and the scene must settle), k as one-hot planes (at k = 0 every blur means
    farther than the focus, at the last position nearer) and the step (the same scene served larger
    has proportionally wider blur in pixels)."""

    def __init__(self, positions: int = 9, channels: tuple = (24, 48, 96, 128), detail_sigmas: tuple = (1.0, 2.0, 4.0),
                 colour: bool = True):
        super().__init__()
        self.positions, self.detail_sigmas = int(positions), tuple(float(s) for s in detail_sigmas)
        # colour=False: the head sees only the blur cues (detail energies), position and step, not the
        # photo's colours, so it cannot learn which textures the training scenes put at which depth
        self.colour = bool(colour)
        for i, s in enumerate(self.detail_sigmas):
            self.register_buffer(f"taps{i}", gaussian_taps(s), persistent=False)
        self.radii = [getattr(self, f"taps{i}").numel() // 2 for i in range(len(self.detail_sigmas))]
        self.register_buffer("grid", torch.arange(self.positions, dtype=torch.float32), persistent=False)
        ch = [int(c) for c in channels]
        self.stem = _block(3 * self.colour + len(self.detail_sigmas) + self.positions + 1, ch[0])
        self.downs = nn.ModuleList(_block(a, b) for a, b in zip(ch, ch[1:]))
        self.ups = nn.ModuleList(_block(b + a, a) for a, b in reversed(list(zip(ch, ch[1:]))))
        self.out = nn.Conv2d(ch[0], self.positions, 1)

    @property
    def multiple(self) -> int:
        return 2 ** len(self.downs)

    def _detail(self, grey: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(len(self.detail_sigmas)):
            out.append((grey - _blur(grey, getattr(self, f"taps{i}"), self.radii[i])).abs() * 4.0)  # small in [-1, 1]: toward 1
        return out

    def forward(self, photo: torch.Tensor, position: torch.Tensor, step_px: torch.Tensor) -> torch.Tensor:
        b, _, h, w = photo.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"the focus-depth head needs sides that are multiples of {self.multiple}, got {w}x{h}")
        position = torch.as_tensor(position, dtype=photo.dtype, device=photo.device).reshape(-1, 1)
        step = torch.as_tensor(step_px, dtype=photo.dtype, device=photo.device).reshape(-1, 1, 1, 1)
        # a tent around k: exactly one-hot at an integer position, and only elementwise ops
        onehot = torch.relu(1 - (self.grid.to(photo.dtype)[None] - position).abs())[:, :, None, None]
        ones = photo[:, :1] * 0 + 1  # (not ones_like: one op fewer for the Core ML package's op set)
        grey = photo.mean(1, keepdim=True)
        x = self.stem(torch.cat([photo] * self.colour + [*self._detail(grey), onehot * ones, step * ones], 1))
        skips = [x]
        for down in self.downs:
            x = down(F.avg_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skips.pop()], 1))
        return self.out(x)


# The re-blur bank of the decoder's lens stack: fixed sigmas (px), a factor 1.5 apart from 0.2 px to
# 17 px, so the convolutions are constants of every exported graph while the blur each frame needs
# (which grows with the image width) is interpolated between neighbours at run time. 17 px covers
# the widest blur the renderer's lens makes at 512 px wide (step 3.2 px x 8 frames / 2 = 12.8 px).
LENS_BLURS = tuple(round(0.2 * 1.5 ** i, 4) for i in range(12))


class LensStack(nn.Module):
    """The photo-guided decoder's thin-lens stack: photo [1, 3, H, W] in [-1, 1] and the frames' focus
    offsets [F] ((j - k) / (F - 1), all F frames of one stack, in order) -> frames [F, 3, H, W] in
    [-1, 1], made from the photo by :class:`FocusDepthHead`'s focus-index probabilities and the lens
    geometry of the module docstring. Everything the frames depend on is computed by tensor ops from
    the inputs (k from the first frame's offset, the blur step from the photo's width), so one exported
    graph serves every position and size."""

    def __init__(self, positions: int = 9, channels: tuple = (24, 48, 96, 128), blurs: tuple = LENS_BLURS,
                 amount: float = 1.0, sharpen_sigma: float = 2.0, step_fraction: float = 0.05 / 8, colour: bool = True):
        super().__init__()
        self.positions, self.amount, self.step_fraction = int(positions), float(amount), float(step_fraction)
        self.head = FocusDepthHead(positions, channels, colour=colour)
        self.grid = [0.0] + [float(s) for s in blurs]  # sigma 0: the photo itself
        if any(b <= a for a, b in zip(self.grid, self.grid[1:])):
            raise ValueError(f"lens blurs must be positive and increasing, got {list(blurs)}")
        for i, s in enumerate([*blurs, sharpen_sigma]):
            self.register_buffer(f"taps{i}", gaussian_taps(s), persistent=False)
        self.radii = [getattr(self, f"taps{i}").numel() // 2 for i in range(len(self.grid))]

    def _bank(self, image: torch.Tensor) -> list[torch.Tensor]:
        planes = image.transpose(0, 1)  # [3, 1, H, W]: colour planes as one-channel images
        blurred = [_blur(planes, getattr(self, f"taps{i}"), r).transpose(0, 1) for i, r in enumerate(self.radii)]
        return [image, *blurred[:-1], image - blurred[-1]]  # photo, its blurs, its detail

    def weights(self, frame_offsets: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """[F, positions, entries]: the bank's weights for frame j of a pixel at focus index d."""
        n = self.positions - 1
        offsets = frame_offsets.reshape(-1, 1).to(step.dtype)
        k = -n * offsets[:1]  # [1, 1]: the first frame is frame 0
        j = k + n * offsets  # [F, 1]
        d = torch.arange(self.positions, dtype=step.dtype, device=step.device)[None]
        need, have = (j - d).abs(), (k - d).abs()  # frames of defocus in frame j, in the photo
        sigma = step * torch.sqrt(torch.relu(need * need - have * have)) / 2
        sigma = torch.clamp(sigma, max=self.grid[-1])
        # piecewise-linear ("hat") interpolation of sigma on the bank's grid
        hats = []
        for i, g in enumerate(self.grid):
            up = (sigma - self.grid[i - 1]) / (g - self.grid[i - 1]) if i > 0 else None
            down = (self.grid[i + 1] - sigma) / (self.grid[i + 1] - g) if i + 1 < len(self.grid) else None
            ramp = down if up is None else up if down is None else torch.minimum(up, down)
            hats.append(torch.clamp(ramp, 0, 1))
        sharpen = self.amount * torch.relu(have - need)  # frames of focus gained over the photo
        return torch.cat([x[..., None] for x in [*hats, sharpen]], -1)

    def step(self, image: torch.Tensor) -> torch.Tensor:
        """The blur radius (px) per frame of focus at this image's width, as a graph value."""
        return self.step_fraction * (image[0, 0, 0] * 0 + 1).sum()  # W, not a constant of the trace

    def probs(self, image: torch.Tensor, frame_offsets: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """[positions, H, W]: the head's focus-index probabilities (k read off the first frame's offset)."""
        k = -(self.positions - 1) * frame_offsets[:1].to(image.dtype)
        return torch.softmax(self.head(image, k, step.reshape(1)), 1)[0]

    def draw(self, image: torch.Tensor, probs: torch.Tensor, frame_offsets: torch.Tensor,
             step: torch.Tensor) -> torch.Tensor:
        """The frames [F, 3, H, W] in [-1, 1] of focus-index probabilities [positions, H, W]."""
        w = self.weights(frame_offsets, step)[..., None, None]  # [F, positions, entries, 1, 1]
        out = 0
        for e, entry in enumerate(self._bank(image)):
            # this entry's per-pixel weight in each frame: its weight at each focus index, by that index's
            # probability (broadcasts and sums only: no shape arithmetic for the converters to trace)
            share = (w[:, :, e] * probs[None]).sum(1, keepdim=True)  # [F, 1, H, W]
            out = out + share * entry
        return out.clamp(-1, 1)

    def forward(self, image: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        step = self.step(image)
        return self.draw(image, self.probs(image, frame_offsets, step), frame_offsets, step)
