"""What `refocus quantize` reports: its own module so every recipe family (ONNX QDQ in
quantize.py, Core ML in coreml_recipes.py) returns it without importing the other."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class QuantizeReport:
    out: Path
    recipe: str
    gates: list = field(default_factory=list)
    keep_float: list = field(default_factory=list)
    sizes_mib: dict = field(default_factory=dict)
    seconds: float = 0.0
