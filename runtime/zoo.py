"""Shipped models, addressed by name.

Shipped weights live in `<repo>/models/<name>/`; REFOCUS_MODELS_DIR points the
zoo at another folder. Anything that is not a known name is treated as a path.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "refocus-tiny-1step"  # the ground-truth-trained student: the only shipped model that beats copying the input
TEACHER_MODEL = "refocus-tiny"


def models_dir() -> Path:
    env = os.environ.get("REFOCUS_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    summary: str


def list_models() -> list[ShippedModel]:
    root = models_dir()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if (child / "model_index.json").is_file():
            summary = ""
            card = child / "refocus.json"
            if card.is_file():
                summary = json.loads(card.read_text()).get("extra", {}).get("summary", "")
            found.append(ShippedModel(child.name, child, summary))
    return found


def default_model_name() -> str:
    """The model every verb uses when none is given: $REFOCUS_MODEL, else the shipped default."""
    return os.environ.get("REFOCUS_MODEL") or DEFAULT_MODEL


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """Name of a shipped model -> its folder; anything else is taken as a path."""
    if name_or_path is None:
        name_or_path = default_model_name()
    text = str(name_or_path)
    candidate = models_dir() / text
    if os.sep not in text and "/" not in text and candidate.is_dir():
        return candidate
    return Path(text).expanduser()
