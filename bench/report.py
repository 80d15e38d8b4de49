"""Writing a benchmark's three outputs (JSON, markdown, PNG figure) side by side."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(out_dir, stem: str, data: dict, markdown: str, figure) -> dict:
    """Write <stem>.json, <stem>.md and <stem>.png into out_dir; returns their paths.

    `stem` may be a (json, markdown, figure) tuple of stems when the names differ."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_stem, md_stem, fig_stem = (stem, stem, stem) if isinstance(stem, str) else stem
    paths = {"json": out / f"{json_stem}.json", "markdown": out / f"{md_stem}.md", "figure": out / f"{fig_stem}.png"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    paths["markdown"].write_text(markdown)
    figure.save(paths["figure"])
    return paths
