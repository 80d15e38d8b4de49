"""The tiny temporal decoder: a small convolutional stand-in for the VAE's temporal decoder.

The temporal VAE decoder is half or more of every few-step stack (issue 21: 0.45-1.6 s of a
0.6-1.9 s stack here; 40-71 % of the FLOPs of a 1- to 4-step stack at full size), and step
distillation cannot touch it. The edge generators this project learns from got their speed back
with a decoder two orders of magnitude smaller (TAESD / TAESDV, about 1.2-1.6 M parameters):
plain 3x3 convolutions, ReLU, nearest upsampling, no attention, no group norm. This one follows
that recipe at the refocuser's latent size and adds light temporal mixing: at the two coarsest
levels each frame is mixed with its neighbours in the chunk by a 1x1 convolution over
[previous, self, next] (zero at the ends), built from slicing and concatenation only, so every
export target (ONNX, Core ML, ExecuTorch) takes it unchanged.

It maps the VAE's unscaled latents [frames, C, h, w] to frames [frames, 3, H, W] in [-1, 1],
the contract of `vae.decode(z, num_frames).sample`, and decodes a whole stack in one chunk.
It is trained by `refocus distill-decoder` (export/tiny_decoder/) to reproduce the model's own
decoder, and ships in the model folder as `tiny_decoder/` with its gate record.

The photo-guided variant (`guided=True`, `_PhotoGuide` below; `refocus distill-decoder --guided`,
shipped as `guided_decoder/`) also takes the input photo and each frame's focus offset, and is
trained toward the true frames instead of the full decoder's: its gate is that it lands at least
as close to the truth as the full decoder does on the same latents.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from refocus_edge.runtime.gaussian import gaussian_taps
from refocus_edge.runtime.lens_stack import LensStack

FOLDER = "tiny_decoder"  # inside a model folder
GUIDED_FOLDER = "guided_decoder"  # the photo-guided one, trained toward the true frames
FOLDERS = {"tiny": FOLDER, "guided": GUIDED_FOLDER}  # --decoder choice -> folder
GATE_FILE = "gate.json"  # inside FOLDER: the LPIPS gate against the full decoder, with the weights' hash


class _Block(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class _TemporalMix(nn.Module):
    """x + W [x(t-1), x(t), x(t+1)] over the frames of one chunk (frames are the batch axis)."""

    def __init__(self, ch: int):
        super().__init__()
        self.mix = nn.Conv2d(3 * ch, ch, 1)
        nn.init.zeros_(self.mix.weight)  # starts as the identity: the spatial path trains first
        nn.init.zeros_(self.mix.bias)

    def forward(self, x):
        zero = torch.zeros_like(x[:1])
        previous = torch.cat([zero, x[:-1]], 0)
        following = torch.cat([x[1:], zero], 0)
        return x + self.mix(torch.cat([previous, x, following], 1))


class TinyTemporalDecoder(ModelMixin, ConfigMixin):
    """latents [frames, C, h, w] (unscaled) -> frames [frames, 3, 2^L h, 2^L w] in [-1, 1], where
    L = len(channels) - 1 upsamplings; `channels` runs from the latent resolution to the output."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, latent_channels: int = 16, channels: tuple = (64, 48, 32), blocks: tuple = (2, 1, 1),
                 temporal_levels: tuple = (0, 1), shuffle: int = 2, num_frames: int = 9, guided: bool = False,
                 guide_channels: int = 16, photo_blurs: tuple = (), photo_sharpen: tuple = (),
                 lens_head: tuple = (), lens_mix: float = 0.0, lens_amount: float = 1.0,
                 lens_sharpen_sigma: float = 2.0, lens_step_fraction: float = 0.05 / 8, lens_colour: bool = True):
        super().__init__()
        channels = [int(c) for c in channels]
        self.conv_in = nn.Conv2d(latent_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList(nn.Sequential(*(_Block(c) for _ in range(int(n))))
                                    for c, n in zip(channels, blocks))
        self.mixes = nn.ModuleDict({str(i): _TemporalMix(channels[i]) for i in temporal_levels})
        self.ups = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels, channels[1:]))
        # The last 2x (or `shuffle`x) comes from a sub-pixel convolution: full-resolution feature maps
        # would cost more than every other level together.
        self.conv_out = nn.Conv2d(channels[-1], 3 * shuffle * shuffle, 3, padding=1)
        self.to_pixels = nn.PixelShuffle(shuffle)
        if guided and shuffle != 2:  # its stride-2 pyramid meets the levels only after a 2x sub-pixel output
            raise ValueError(f"a guided decoder needs shuffle 2, got {shuffle}")
        if (photo_blurs or photo_sharpen) and not guided:
            raise ValueError("photo_blurs and photo_sharpen re-blur or sharpen the input photo: only a guided "
                             "decoder has them")
        if photo_sharpen and not photo_blurs:
            raise ValueError("photo_sharpen entries join the photo_blurs bank: give photo_blurs too")
        self.guide = _PhotoGuide(channels, shuffle, guide_channels, photo_blurs, photo_sharpen) if guided else None
        # The thin-lens stack (runtime/lens_stack.py): a focus-depth head's estimate of each pixel's focus
        # index turned into frames by re-blurring or sharpening the photo, mixed into the output at
        # `lens_mix`. Why: the 1-step refocuser's latents say little about depth (its stacks rank depth
        # from focus at 0.36, a stack built from the true depth this way at 0.745 of the true stacks' 0.749).
        if lens_head and not guided:
            raise ValueError("lens_head builds frames from the input photo: only a guided decoder has it")
        if lens_head and not 0 < lens_mix <= 1:
            raise ValueError(f"lens_mix must be in (0, 1] with a lens_head, got {lens_mix}")
        self.lens = LensStack(num_frames, tuple(lens_head), amount=lens_amount, sharpen_sigma=lens_sharpen_sigma,
                              step_fraction=lens_step_fraction, colour=lens_colour) if lens_head else None

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.config.channels) - 1) * int(self.config.shuffle)

    @property
    def guided(self) -> bool:
        return self.guide is not None

    def forward(self, latents: torch.Tensor, image: torch.Tensor | None = None,
                frame_offsets: torch.Tensor | None = None) -> torch.Tensor:
        """`image` [1, 3, H, W] in [-1, 1] (the input photo) and `frame_offsets` [frames] ((j - k) / 8
        for output frame j of a photo taken at position k) are the guided decoder's, and required by it."""
        if self.guided and (image is None or frame_offsets is None):
            raise ValueError("the guided decoder needs the input photo and the frames' focus offsets")
        features = self.guide.features(image, frame_offsets, latents.shape[0]) if self.guided else None
        x = self.conv_in(latents)
        for level, blocks in enumerate(self.levels):
            if features is not None:
                x = x + features[level]
            x = blocks(x)
            if str(level) in self.mixes:
                x = self.mixes[str(level)](x)
            if level < len(self.ups):
                x = self.ups[level](nn.functional.interpolate(torch.relu(x), scale_factor=2.0, mode="nearest"))
        x = torch.relu(x)
        frames = self.to_pixels(self.conv_out(x))
        if features is None:
            return frames
        # the last level's features + each frame's offset plane, built once: both blends read it
        head = self.guide._with_offsets(x, frame_offsets)
        if self.guide.blurs is not None:  # part of each pixel: the photo re-blurred by a learnt amount
            frames = self.guide.blurs(head, image, frames)
        keep = self.guide.keep(head)  # per output pixel: how much of the photo to keep
        out = keep * image + (1 - keep) * frames
        if self.lens is None:
            return out
        if frame_offsets.shape[0] != self.config.num_frames:  # the lens reads k off the first frame's offset
            raise ValueError(f"a decoder with a lens stack decodes all {self.config.num_frames} frames in one chunk, "
                             f"got {frame_offsets.shape[0]}")
        mix = float(self.config.lens_mix)
        return mix * self.lens(image, frame_offsets) + (1 - mix) * out


class _PhotoGuide(nn.Module):
    """What the guided decoder adds: the input photo's features, injected at every level, and a
    per-pixel blend of the photo into the output.

    A latent decoder cannot put back detail its 8x-downsampled latents lost (the tiny model's VAE
    round trip alone costs LPIPS 0.185 on photo stacks, where copying the photo costs 0.197), but
    the photo still holds it wherever the output frame should look like the photo: at the input's
    own focal position, and wherever the scene's blur does not change between the two positions.
    So the decoder sees the photo (a stride-2 convolution pyramid matched to its levels, added
    through zero-initialised 1x1 convolutions, so an untrained guide leaves the latent path as it
    was) and each frame's focus offset, and outputs keep * photo + (1 - keep) * its own frame, with
    `keep` learnt per pixel (starting at 0.05 everywhere). The conditioning mirrors StableSR's idea of feeding the degraded input's
    features into the decoder to keep fidelity (Wang et al., 2023); the blend is this project's.
    """

    def __init__(self, channels: list[int], shuffle: int, width: int, photo_blurs: tuple = (),
                 photo_sharpen: tuple = ()):
        super().__init__()
        self.blurs = _PhotoBlurs(channels[-1], shuffle, photo_blurs, photo_sharpen) if photo_blurs else None
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        # from full resolution down to each decoder level: last level first (H / shuffle), then coarser
        widths = [width, *reversed(channels)]
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.inject = nn.ModuleList(nn.Conv2d(c + 1, c, 1) for c in channels)  # + the frame's offset
        for conv in self.inject:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.keep_logits = nn.Conv2d(channels[-1] + 1, shuffle * shuffle, 3, padding=1)
        nn.init.zeros_(self.keep_logits.weight)
        nn.init.constant_(self.keep_logits.bias, -3.0)  # starts at keep = 0.05
        self.to_pixels = nn.PixelShuffle(shuffle)

    @staticmethod
    def _with_offsets(x: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        frames = frame_offsets.shape[0]
        x = x.expand(frames, -1, -1, -1)
        plane = frame_offsets.to(x.dtype).reshape(frames, 1, 1, 1).expand(frames, 1, x.shape[-2], x.shape[-1])
        return torch.cat([x, plane], 1)

    def features(self, image: torch.Tensor, frame_offsets: torch.Tensor, frames: int) -> list[torch.Tensor]:
        x = torch.relu(self.stem(image))
        pyramid = []
        for down in self.downs:
            x = torch.relu(down(x))
            pyramid.append(x)
        pyramid = pyramid[::-1]  # coarsest (the latent resolution) first, like the decoder's levels
        return [inject(self._with_offsets(p, frame_offsets)) for inject, p in zip(self.inject, pyramid)]

    def keep(self, head: torch.Tensor) -> torch.Tensor:
        """head: the last level's features with the frame's offset plane (_with_offsets)."""
        return torch.sigmoid(self.to_pixels(self.keep_logits(head)))


class _PhotoBlurs(nn.Module):
    """The input photo re-blurred (or sharpened), mixed into each frame per pixel.

    Why: most of what a frame at another focus position shows is the photo with *more* blur where the
    scene is farther from the new focal plane than from the photo's; only the rest needs detail the photo
    does not have. Measured on the held-out synthetic stacks (128x128, inputs 0, 4, 8;
    benchmarks/reblur_oracle.py): stacks that only re-blur, never sharpening past the photo, rank depth
    from focus at 0.48 (0.28 / 0.48 / 0.69 per input; the true stacks: 0.75), where the guided decoder
    without the bank ranks it at 0.36; the rest of the way needs sharpening. A latent decoder
    cannot make that blur exactly (its latents are 8x coarser than the pixels), a fixed bank of
    Gaussian blurs of the photo can, so the decoder only has to say how much, per pixel and frame.
    The same oracle with the photo unsharp-masked (amount 2 at sigma 1 px, or 1 at 2 px) where the
    frame should be sharper ranks depth at 0.55 (`--sharpen`), so the bank may also hold unsharp masks
    of the photo, 2 * photo - G(sigma) * photo (`photo_sharpen` sigmas): mixed with the blurs, the
    decoder can sharpen past the photo by a learnt amount where a frame's focal plane meets the scene.

    Output: a * sum_b p_b * bank_b + (1 - a) * frame, with the share a (sigmoid) and the bank weights
    p (softmax over the bank: the blurs, then the unsharp masks) predicted, like the keep blend, by a
    3x3 convolution of the last level's features and the frame's offset, sub-pixel shuffled to full
    resolution. The convolution starts with zero weights: a = 0.05 and an even mix of the bank
    everywhere, so a decoder trained without it starts close to where it was. Separable one-channel
    convolutions with replicated borders only: every export target takes them. Sigmas are pixels at
    the decoder's output.
    """

    def __init__(self, channels: int, shuffle: int, sigmas: tuple, sharpen: tuple = ()):
        super().__init__()
        sigmas, sharpen = [float(s) for s in sigmas], [float(s) for s in sharpen]
        if not sigmas or any(not s > 0 for s in sigmas):
            raise ValueError(f"photo_blurs must be positive sigmas in pixels, got {list(sigmas)}")
        if any(not s > 0 for s in sharpen):
            raise ValueError(f"photo_sharpen must be positive sigmas in pixels, got {list(sharpen)}")
        # One blur per distinct sigma; the unsharp masks reuse a blur of the same sigma.
        distinct = list(dict.fromkeys(sigmas + sharpen))
        # Taps are a function of the config: rebuilt, never saved, so the weights file holds only weights.
        for i, s in enumerate(distinct):
            self.register_buffer(f"taps{i}", gaussian_taps(s), persistent=False)
        # plain ints: a radius read off a tensor while tracing becomes an op Core ML cannot convert
        self.radii = [getattr(self, f"taps{i}").numel() // 2 for i in range(len(distinct))]
        self.blur_index = [distinct.index(s) for s in sigmas]
        self.sharpen_index = [distinct.index(s) for s in sharpen]
        entries = len(sigmas) + len(sharpen)
        self.logits = nn.Conv2d(channels + 1, (1 + entries) * shuffle * shuffle, 3, padding=1)
        nn.init.zeros_(self.logits.weight)
        nn.init.zeros_(self.logits.bias)
        with torch.no_grad():
            self.logits.bias.view(1 + entries, shuffle * shuffle)[0].fill_(-3.0)  # a starts at 0.05
        self.to_pixels = nn.PixelShuffle(shuffle)

    def blurred(self, image: torch.Tensor) -> list[torch.Tensor]:
        """[1, 3, H, W] -> one [1, 3, H, W] blur per distinct sigma (separable, replicated borders)."""
        # Colour planes as a batch of one-channel images, not a grouped convolution: OpenVINO 2026.4's
        # CPU plugin never finishes a static-shape bf16 compile of a 3-group convolution with a 17-tap
        # kernel (checked by hand; 5 taps compiles), and one-channel convolutions compile in 0.03 s.
        planes = image.transpose(0, 1)  # [3, 1, H, W]: no shape arithmetic for the converters to trace
        out = []
        for i, r in enumerate(self.radii):
            taps = getattr(self, f"taps{i}").to(image.dtype)
            x = nn.functional.pad(planes, (r, r, r, r), mode="replicate")
            x = nn.functional.conv2d(x, taps.view(1, 1, 1, -1))
            out.append(nn.functional.conv2d(x, taps.view(1, 1, -1, 1)).transpose(0, 1))
        return out

    def bank(self, image: torch.Tensor) -> list[torch.Tensor]:
        """[1, 3, H, W] -> the bank's entries: the blurs, then the unsharp masks 2 * photo - blur."""
        blurs = self.blurred(image)
        return [blurs[i] for i in self.blur_index] + [2 * image - blurs[i] for i in self.sharpen_index]

    def forward(self, head: torch.Tensor, image: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """head: the last level's features with the frame's offset plane, as the keep blend reads them."""
        logits = self.to_pixels(self.logits(head))  # [frames, 1 + bank, H, W]
        share = torch.sigmoid(logits[:, :1])
        weights = torch.softmax(logits[:, 1:], dim=1)
        mixed = 0
        for b, entry in enumerate(self.bank(image)):
            mixed = mixed + weights[:, b:b + 1] * entry
        return share * mixed + (1 - share) * frames


class TinyDecoderVAE(nn.Module):
    """The refocuser's `vae` slot with the tiny decoder: encodes with the model's VAE (conditioning
    latents are unchanged) and decodes with the tiny one, with the VAE's call signatures and config,
    so the sampler, the component specs and every exporter see an ordinary VAE."""

    def __init__(self, vae, tiny: TinyTemporalDecoder):
        super().__init__()
        self.vae, self.tiny = vae, tiny

    @property
    def config(self):
        return self.vae.config

    @property
    def dtype(self) -> torch.dtype:
        return self.tiny.dtype

    def encode(self, *args, **kwargs):
        return self.vae.encode(*args, **kwargs)

    @property
    def takes_guide(self) -> bool:
        """The sampler passes the input photo and its position to a guided decoder's decode."""
        return self.tiny.guided

    def decode(self, z: torch.Tensor, num_frames: int | None = None, return_dict: bool = True,
               guide: tuple | None = None):
        # num_frames is the chunk: the tiny decoder mixes frames inside the chunk it is given;
        # guide = (photo [1, 3, H, W] in [-1, 1], the chunk's frame offsets [frames]) for a guided one
        frames = self.tiny(z, *guide) if self.tiny.guided else self.tiny(z)
        return DecoderOutput(sample=frames) if return_dict else (frames,)


def tiny_decoder_problem(root, kind: str = "tiny") -> str | None:
    """Why the model folder `root` has no usable tiny (or guided) decoder (None: it has one): missing,
    its gate failed or is unrecorded, its weights changed since the gate, or it was trained for another VAE."""
    from refocus_edge.runtime.artifacts import file_sha256, model_hash

    folder = Path(root) / FOLDERS[kind]
    retrain = f"refocus distill-decoder --model {root}" + (" --guided" if kind == "guided" else "")
    if not (folder / "config.json").is_file():
        return (f"this model has no {kind} decoder (no {FOLDERS[kind]}/ folder with a config.json); train one "
                f"with `{retrain}`")
    try:
        record = json.loads((folder / GATE_FILE).read_text())
        passed, sums, vae = record["gate"]["passed"], record["weights_sha256"], record["vae_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / GATE_FILE} is missing or unreadable: the tiny decoder has no recorded gate"
    if not passed:
        return f"the {kind} decoder in {folder} failed its gate ({record['gate'].get('metric')})"
    for name, digest in sums.items():
        if not (folder / name).is_file() or file_sha256(folder / name) != digest:
            return (f"{folder / name} changed since it passed its gate (SHA-256 differs); "
                    f"run `{retrain} --force` again")
    if model_hash(Path(root) / "vae") != vae:
        return f"the {kind} decoder in {folder} was trained for another VAE than {Path(root) / 'vae'}"
    if "unet_hash" in record and model_hash(Path(root) / "unet") != record["unet_hash"]:
        return (f"the {kind} decoder in {folder} passed its gate on another UNet's samples; run "
                f"`{retrain} --force` again")
    return None


def load_tiny_decoder(root, dtype=None, kind: str = "tiny") -> TinyTemporalDecoder:
    """The gated tiny (or guided) decoder of model folder `root`; ModelLoadError says why not."""
    from refocus_edge.runtime.errors import ModelLoadError
    from refocus_edge.runtime.quiet import quiet_libraries

    problem = tiny_decoder_problem(root, kind)
    if problem:
        raise ModelLoadError(problem, Path(root) / FOLDERS[kind])
    with quiet_libraries():
        tiny = TinyTemporalDecoder.from_pretrained(Path(root) / FOLDERS[kind], use_safetensors=True,
                                                   torch_dtype=dtype or torch.float32)
    return tiny.eval()
