"""Quantization units: the blocks a sensitivity scan switches on one at a time.

Nodes are grouped by the module path the exporter writes into every ONNX node
name ("/unet/down_blocks.0/resnets.0/spatial_res_block/conv1/Conv"). A unit is
one block of the model: a resnet, an attention, an up/down sampler, or a
top-level layer (conv_in, conv_out, the time and added-time embeddings, the
decoder's time_conv_out). The known-sensitive units, the ones practice says
to try in float first, are flagged, and the scan measures every unit anyway.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Top-level layers that are a unit on their own (anything not inside a *_blocks container).
_BLOCK_CONTAINERS = ("down_blocks", "up_blocks", "mid_block", "encoder", "decoder", "vision_model")
# Unit names practice flags as sensitive: the first and last convolutions, the embeddings
# of the timestep and added time ids, temporal mixing (Conv3d / temporal res blocks), and the
# decoder's last (full-resolution) blocks.
_SENSITIVE = (r"conv_in$", r"conv_out$", r"time_embedding$", r"add_embedding$", r"time_conv_out$",
              r"temporal_res_block$", r"decoder/up_blocks\.3/")


# Layers every QDQ recipe keeps float: the UNet's timestep and added-time-id embedding MLPs and its
# temporal transformers' frame-position embeddings. Why: they are a few Gemms over one row per item
# or frame (no measurable time), and quantized they stop OpenVINO 2026.4's CPU plugin from compiling
# the UNet with static shapes ("DequantizationSubtract contains empty child edge"), on the tiny
# student and on the released architecture alike; the dynamic-shape graph it falls back to was 1.17x
# slower at full size (benchmarks/results/full-size-calls/).
_ALWAYS_FLOAT = (r"/time_embedding/", r"/add_embedding/", r"/time_pos_embed/")


def always_float(node_name: str) -> bool:
    """Whether a node (by its exporter-written module path) stays float in every QDQ graph."""
    return any(re.search(p, node_name) for p in _ALWAYS_FLOAT)


@dataclass(frozen=True)
class Unit:
    component: str
    name: str  # module path, e.g. "decoder/up_blocks.3/resnets.0"
    nodes: tuple[str, ...]  # ONNX node names to quantize for this unit
    known_sensitive: bool

    def to_json(self) -> dict:
        return {"component": self.component, "name": self.name, "nodes": len(self.nodes),
                "known_sensitive": self.known_sensitive}


def _block(parts: list[str], i: int, out: list[str]) -> None:
    """Append "resnets.0" (and its spatial/temporal half, each a unit of its own) to `out`."""
    if i < len(parts) and re.fullmatch(r"\w+\.\d+", parts[i]):
        out.append(parts[i])
        if i + 1 < len(parts) and parts[i + 1] in ("spatial_res_block", "temporal_res_block"):
            out.append(parts[i + 1])


def unit_of(node_name: str) -> str:
    """The unit a node belongs to, from its exporter-written module path."""
    parts = [p for p in node_name.split("/") if p][:-1]  # drop the op name ("Conv")
    if parts and parts[0] in ("unet", "vae", "image_encoder"):
        parts = parts[1:]
    if not parts:
        return "graph"
    # Walk to the first "<container>.<index>" or a block inside mid_block / encoder / decoder.
    out = []
    for i, part in enumerate(parts):
        out.append(part)
        if re.fullmatch(r"(down_blocks|up_blocks|layers)\.\d+", part):
            # one level deeper: resnets.0 / attentions.0 / upsamplers.0 ...
            _block(parts, i + 1, out)
            break
        if part == "mid_block":
            _block(parts, i + 1, out)
            break
        if part not in _BLOCK_CONTAINERS and part != "encoder":
            break
    return "/".join(out)


def graph_units(component: str, model, op_types) -> list[Unit]:
    """Units of an ONNX model (onnx.ModelProto): quantizable nodes grouped by block, in graph order."""
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in op_types and node.name and not always_float(node.name):
            groups.setdefault(unit_of(node.name), []).append(node.name)
    return [Unit(component, name, tuple(nodes), any(re.search(p, name) for p in _SENSITIVE))
            for name, nodes in groups.items()]
