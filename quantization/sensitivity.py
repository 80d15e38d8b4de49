"""Per-block sensitivity: quantize one unit at a time, measure the stack's drift.

For every unit (runtime block, see units.py) of every quantized component, a
graph with only that unit quantized replaces the fp32 one and the held-out
stacks are sampled again (drift.py). Units whose median-frame drift exceeds the
recipe's unit budget stay in float (the keep list). Decoder units are scanned
once for all decode chunk sizes: the 8- and 1-frame graphs share their weights
and their block names, and a stack runs through both.

Units drift little alone and add up together, so after the budget cut the fully
quantized model is measured; while it misses the recipe's end-to-end budget the
most sensitive unit still quantized joins the keep list, and it is measured
again. Every step is recorded in the table saved with the bundle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from refocus_edge.runtime.component_names import component_family
from typing import Callable


def family(component: str) -> str:
    return component_family(component)


@dataclass
class UnitResult:
    family: str
    unit: str
    nodes: int
    known_sensitive: bool
    median: float = float("nan")
    worst: float = float("nan")
    keep_float: bool = False
    reason: str = ""

    def to_json(self) -> dict:
        # NaN (a unit that was not measured, or whose stacks went non-finite) becomes null:
        # json.dumps would write a bare NaN, which strict JSON readers refuse.
        return {k: ((None if v != v else round(v, 6)) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


@dataclass
class ScanResult:
    units: list[UnitResult]
    steps: list[dict] = field(default_factory=list)  # the greedy keep-list steps after the budget cut

    def keep(self) -> set[tuple[str, str]]:
        return {(u.family, u.unit) for u in self.units if u.keep_float}

    def to_json(self) -> dict:
        return {"units": [u.to_json() for u in self.units], "steps": self.steps}


def scan_units(unit_nodes: dict[tuple[str, str], dict[str, list[str]]], known: dict[tuple[str, str], bool],
               measure: Callable[[dict[str, list[str]]], "object"], unit_budget: float,
               progress: Callable[[str], None] = lambda _m: None) -> ScanResult:
    """Measure each unit alone. `unit_nodes[(family, unit)]` = {component: nodes};
    `measure({component: nodes})` returns the Drift of a model with just those nodes quantized."""
    results = []
    for i, ((fam, unit), per_component) in enumerate(unit_nodes.items()):
        drift = measure(per_component)
        r = UnitResult(fam, unit, sum(len(n) for n in per_component.values()), known[(fam, unit)],
                       drift.median, drift.worst)
        if not drift.median <= unit_budget:  # NaN stays in float too
            r.keep_float, r.reason = True, f"alone drifts {drift.median:.4f} > unit budget {unit_budget}"
        results.append(r)
        progress(f"  [{i + 1}/{len(unit_nodes)}] {fam}:{unit} median {drift.median:.4f} worst {drift.worst:.4f}"
                 f"{'  -> float' if r.keep_float else ''}")
    return ScanResult(results)


def _finite(x: float):
    return None if x != x else round(x, 6)  # NaN -> null in the JSON table


def _cell(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def tighten(scan: ScanResult, measure_all: Callable[[set], "object"], budget: tuple[float, float],
            progress: Callable[[str], None] = lambda _m: None):
    """Move the most sensitive quantized units to float until the whole model meets `budget`.

    `measure_all(keep)` returns the Drift with every unit quantized except those in `keep`.
    Returns the final Drift (which may still miss the budget if nothing is left to keep)."""
    order = sorted((u for u in scan.units if not u.keep_float), key=lambda u: -u.median)
    drift = measure_all(scan.keep())
    scan.steps.append({"keep_float": len(scan.keep()), "median": _finite(drift.median),
                       "worst": _finite(drift.worst), "added": None})
    progress(f"  all but {len(scan.keep())} unit(s): median {drift.median:.4f} worst {drift.worst:.4f}")
    for unit in order:
        if drift.within(budget):
            break
        unit.keep_float = True
        unit.reason = (f"quantized together the model drifted {drift.median:.4f}/{drift.worst:.4f} "
                       f"(median/worst) > {budget[0]}/{budget[1]}; most sensitive left")
        drift = measure_all(scan.keep())
        scan.steps.append({"keep_float": len(scan.keep()), "median": _finite(drift.median),
                           "worst": _finite(drift.worst), "added": f"{unit.family}:{unit.unit}"})
        progress(f"  + keep {unit.family}:{unit.unit} in float: median {drift.median:.4f} worst {drift.worst:.4f}")
    return drift


def write_table(scan: ScanResult, folder: Path, recipe: str, budget: float) -> list[str]:
    """sensitivity.json, sensitivity.md and sensitivity.png (bars per unit) in `folder`; returns names."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sensitivity.json").write_text(json.dumps({"recipe": recipe, "unit_budget": budget,
                                                        **scan.to_json()}, indent=1) + "\n")
    lines = [f"# Sensitivity scan: {recipe}", "",
             f"Each unit quantized alone; LPIPS (alex) drift of the held-out stacks against fp32. "
             f"Unit budget (median frame): {budget}.", "",
             "| component | unit | nodes | known sensitive | median | worst | float? | why |",
             "|---|---|---|---|---|---|---|---|"]
    for u in scan.units:
        lines.append(f"| {u.family} | {u.unit} | {u.nodes} | {'yes' if u.known_sensitive else ''} | "
                     f"{u.median:.4f} | {u.worst:.4f} | {'float' if u.keep_float else 'quantized'} | {u.reason} |")
    if scan.steps:
        lines += ["", "Whole model, keep list grown until the drift is within the scan target (the recipe's budget less its headroom):", "",
                  "| units in float | added | median | worst |", "|---|---|---|---|"]
        lines += [f"| {s['keep_float']} | {s['added'] or '(budget cut)'} | {_cell(s['median'])} | {_cell(s['worst'])} |"
                  for s in scan.steps]
    (folder / "sensitivity.md").write_text("\n".join(lines) + "\n")
    names = ["sensitivity.json", "sensitivity.md"]
    try:
        _plot(scan, folder / "sensitivity.png", recipe, budget)
        names.append("sensitivity.png")
    except ImportError:  # matplotlib is optional; the table says everything the chart does
        pass
    return names


def _plot(scan: ScanResult, path: Path, recipe: str, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = scan.units
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(units) + 1)))
    y = range(len(units))
    colors = ["#c0392b" if u.keep_float else "#2e86c1" for u in units]
    ax.barh(list(y), [max(u.median, 1e-6) for u in units], color=colors)
    ax.set_yticks(list(y), [f"{u.family}:{u.unit}" for u in units], fontsize=6)
    ax.invert_yaxis()
    ax.axvline(budget, color="k", lw=0.8, ls="--", label=f"unit budget {budget}")
    ax.set_xscale("log")
    ax.set_xlabel("median-frame LPIPS drift with only this unit quantized (red: kept in float)")
    ax.set_title(f"{recipe}: per-unit sensitivity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
