"""Component names, without torch: the CLI and the recipe tables read them at import time.

The decoder is one component per decode chunk size ("vae_decoder_8", ...); everything that
needs a component name, a chunk size or a family reads it from here (components.py builds
the specs with these names).
"""
from __future__ import annotations

IMAGE_ENCODER, VAE_ENCODER, UNET = "image_encoder", "vae_encoder", "unet"
DECODER_FAMILY = "vae_decoder"
DECODER_PREFIX = DECODER_FAMILY + "_"
VAE_PREFIX = "vae_"  # the components the VAE adapter serves: the encoder and every decoder


# --decoder: the VAE's temporal decoder; the model's tiny decoder (runtime/tiny_decoder.py, distilled
# from the full one); its photo-guided decoder (the tiny architecture that also sees the input photo,
# trained toward the true frames); or auto: guided, else tiny, where the model has one that passed its gate.
DECODERS = ("full", "tiny", "guided", "auto")
# What `refocus run` (fast mode, a model folder) decodes with when --decoder is not given: the guided
# decoder where the model has a gated one, else the full one. Library loads default to the full one.
RUN_DEFAULT = "run-default"


def decoder_name(chunk: int) -> str:
    return f"{DECODER_PREFIX}{int(chunk)}"


def is_decoder(name: str) -> bool:
    return name.startswith(DECODER_PREFIX)


def decoder_chunk(name: str) -> int:
    """The chunk size (frames) of decoder component `name`."""
    return int(name[len(DECODER_PREFIX):])


def component_family(name: str) -> str:
    """What recipes and sensitivity tables address: every decoder chunk size is one family."""
    return DECODER_FAMILY if is_decoder(name) else name
