"""Write one component's ExecuTorch program: its static example inputs, torch.export (or the int8
PT2E flow), XNNPACK lowering, the .pte file, and the manifest record of what was written."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from refocus_edge.export.executorch.lower import export_graph, lower
from refocus_edge.export.executorch.quantize import quantize_int8, split_items
from refocus_edge.runtime.program_shapes import per_item_axis, program_shapes


def example_args(spec, dtype: torch.dtype) -> tuple:
    """Sample inputs at the program's static shapes (one item on the per-item axis)."""
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "opt", dtype)
    shapes = program_shapes(spec)
    return tuple(feeds[n][tuple(slice(0, s) for s in shapes[n])].contiguous() for n in spec.input_names)


def write_program(job, variant, spec, module, path: Path) -> dict:
    """Export, lower and write `module` as the program of `spec`; returns its manifest record."""
    from refocus_edge.runtime.component_names import component_family

    dtype = torch.float16 if variant.precision == "fp16" else torch.float32
    axis = per_item_axis(spec)
    example = example_args(spec, dtype)
    int8 = variant.recipe == "int8" and component_family(spec.name) not in job.cfg.int8_keep_float
    with warnings.catch_warnings():  # torch.export's and ExecuTorch's deprecation chatter is not the user's
        warnings.simplefilter("ignore")
        exported = export_graph(module, example, spec.name, for_int8=int8)
        if int8:
            calls = job.state["calibration"].get(spec.name, [])
            calibration = [args for feeds in calls for args in split_items(feeds, spec.input_names, axis is not None)]
            exported = quantize_int8(exported, example, calibration, spec.name)
        data, counts = lower(exported, spec.name, job.cfg.delegate)
    del exported
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"inputs": {n: list(a.shape) for n, a in zip(spec.input_names, example)},
            "per_item_axis": axis, "dtype": str(dtype).removeprefix("torch."),
            "bytes": len(data), "mib": round(len(data) / 2 ** 20, 3), **counts.to_json(),
            **({"kept_float": True} if variant.recipe == "int8" and not int8 else {})}
