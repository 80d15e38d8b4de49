"""One component module -> an ExecuTorch program (.pte bytes), lowered to XNNPACK.

torch.export at the program's static shapes (runtime/program_shapes.py), the graph rewrites that
let XNNPACK take more of it (rewrites.py), then `to_edge_transform_and_lower` with the delegates' partitioners (XNNPACK; Core ML first on macOS
when asked), then `to_executorch`. What the partitioners left to ExecuTorch's portable kernels is
counted per op, so the manifest says how much of each graph XNNPACK runs. A graph that fails to
export or lower raises ProgramExportError naming the component, the stage, the op the error names
and the innermost model source line in the traceback.
"""
from __future__ import annotations

import operator
import re
import traceback
from dataclasses import dataclass, field

import torch

from refocus_edge.runtime.errors import RefocusError

# Frames of these packages are the toolchain, not "where" in the model a failure happened.
_TOOLCHAIN = ("/torch/", "/torchao/", "/executorch/", "/_dynamo/", "/export/executorch/", "/contextlib.py")


class ProgramExportError(RefocusError):
    """A component could not be exported or lowered to an ExecuTorch program."""


@dataclass
class Delegation:
    """How much of a lowered graph runs in delegates (XNNPACK) vs ExecuTorch's portable kernels."""

    delegated_ops: int
    other_ops: int
    subgraphs: int
    not_delegated: dict = field(default_factory=dict)  # op name -> count, the ops left outside

    @property
    def share(self) -> float:
        total = self.delegated_ops + self.other_ops
        return self.delegated_ops / total if total else 0.0

    def to_json(self) -> dict:
        return {"xnnpack_share": round(self.share, 4), "delegated_ops": self.delegated_ops,
                "other_ops": self.other_ops, "delegate_subgraphs": self.subgraphs,
                "not_delegated": dict(sorted(self.not_delegated.items(), key=lambda kv: -kv[1]))}


def _op_name(node) -> str:
    target = node.target
    return getattr(target, "__name__", None) or str(target)


def delegation(graph_module) -> Delegation:
    """Count ops inside delegate subgraphs and ops left in the top graph (getitem glue excluded)."""
    delegated, other, subgraphs, left = 0, 0, 0, {}
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            lowered = getattr(graph_module, node.target)
            subgraphs += 1
            delegated += sum(1 for n in lowered.original_module.graph.nodes
                             if n.op == "call_function" and n.target is not operator.getitem)
        elif node.op == "call_function" and node.target is not operator.getitem \
                and "executorch_call_delegate" not in _op_name(node):
            other += 1
            left[_op_name(node)] = left.get(_op_name(node), 0) + 1
    return Delegation(delegated, other, subgraphs, left)


def _where(exc: BaseException) -> str:
    """The innermost model source line in the traceback chain (diffusers', transformers', ours or the
    caller's module), e.g. 'attention_processor.py:1234 in forward: hidden_states = ...'."""
    found = ""
    while exc is not None:
        for frame in traceback.extract_tb(exc.__traceback__):
            path = frame.filename.replace("\\", "/")
            if not any(part in path for part in _TOOLCHAIN) and not path.startswith("<"):
                found = f"{path.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
        exc = exc.__cause__ or exc.__context__
    return found


def _op_in(message: str) -> str:
    """The first ATen/edge op an error message names (aten.foo.default, aten::foo), if any."""
    m = re.search(r"(aten[.:]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", message)
    return m.group(1) if m else ""


def explain(component: str, stage: str, exc: BaseException) -> ProgramExportError:
    message = str(exc).strip().splitlines()
    first = next((line for line in message if line.strip()), type(exc).__name__)
    op, where = _op_in(str(exc)), _where(exc)
    parts = [f"executorch export of {component} failed in {stage}: {type(exc).__name__}: {first[:300]}"]
    if op:
        parts.append(f"op {op}")
    if where:
        parts.append(f"at {where}")
    return ProgramExportError("; ".join(parts))


def export_graph(module: torch.nn.Module, args: tuple, component: str, for_int8: bool = False):
    """torch.export of `module` at the static shapes of `args`, rewritten for XNNPACK (rewrites.py;
    without the group-norm rewrite when the graph is to be quantized): an ExportedProgram."""
    from refocus_edge.export.executorch.rewrites import rewrite_for_xnnpack

    try:
        with torch.no_grad():
            exported = torch.export.export(module, args, strict=False)
    except Exception as exc:
        raise explain(component, "torch.export", exc) from exc
    try:
        return rewrite_for_xnnpack(exported, group_norms=not for_int8)
    except Exception as exc:
        raise explain(component, "the XNNPACK graph rewrites", exc) from exc


def xnnpack_partitioner():
    """XNNPACK's partitioner without its no-op clone configs. XNNPACK drops the copies it takes in,
    and a partition whose result fed such a copy and another op outside then returns that result
    twice, which its preprocessing rejects ("Output node ... is already in the inputs": seen on the
    UNet's temporal blocks, after a permute). Left outside, a copy costs one portable-kernel copy."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (CloneConfig,
                                                                                   CloneDimOrderConfig)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    configs = [c for c in ALL_PARTITIONER_CONFIGS if c not in (CloneConfig, CloneDimOrderConfig)]
    return XnnpackPartitioner(configs=configs)


def partitioners(delegate: str) -> list:
    if delegate == "coreml":  # macOS only (checked before any work); what Core ML leaves goes to XNNPACK
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        return [CoreMLPartitioner(), xnnpack_partitioner()]
    return [xnnpack_partitioner()]


def lower(exported, component: str, delegate: str = "xnnpack") -> tuple[bytes, Delegation]:
    """An ExportedProgram -> (.pte bytes, its delegation counts)."""
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(exported, partitioner=partitioners(delegate))
        counts = delegation(edge.exported_program().graph_module)
    except Exception as exc:
        raise explain(component, f"lowering to {delegate}", exc) from exc
    try:
        program = edge.to_executorch()
        return program.buffer, counts
    except Exception as exc:
        raise explain(component, "to_executorch", exc) from exc
