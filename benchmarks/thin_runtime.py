"""The thin runtime in numbers (issue 19, item 8): cold start of `refocus run` on an ONNX Runtime
bundle with and without torch in the environment, and the installed size of the minimal runtime
environment against the full one.

Cold start is the wall time of a fresh `refocus run` process, from exec to exit (interpreter
start, imports, bundle check and ONNX Runtime sessions, photo, sampling, writing the folder), on
a bundle of the default model exported once (`refocus export onnx`). Variants, run interleaved
(one of each per round, after one untimed warm-up round), median over the rounds:

* `thin, torch importable`: this environment as it is (torch, diffusers, transformers installed);
* `thin, torch hidden`: the same interpreter with tests/no_torch/sitecustomize.py first on the
  path, so that importing torch, diffusers or transformers fails;
* `thin, minimal venv` (with --min-venv): a fresh venv holding only `pip install .[onnx]`;
* `torch sampler (before)`: the same run through the PyTorch sampler on the same ONNX Runtime
  sessions, which is what `refocus run --model BUNDLE` did before the thin runtime (it imported
  torch and diffusers for the loop and the scheduler).

All with `--backend onnxruntime` (no dispatch timing) and `--no-dof`, so every variant writes the
same files; `--with-dof` adds the default run (views computed with torch where it is importable,
skipped where not). Installed size is the sum of the files each distribution's RECORD lists, over
the dependency closure of a requirement list, read from installed metadata: the minimal runtime
(`refocus-edge[onnx]`) from the minimal venv, today's full install (the dependencies before the
thin runtime: torch, diffusers, transformers, ... plus [onnx]) from this environment. No second
torch is installed. `du` of the minimal venv's site-packages is recorded as a cross-check.

    OMP_NUM_THREADS=1 python -m benchmarks.thin_runtime --min-venv out/thin-runtime/venv \\
        --repeats 7 --out benchmarks/results/thin-runtime
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.recording import command_line, write_results

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = REPO / "tests" / "no_torch"
PHOTO = REPO / "samples" / "coffee.jpg"
# The install before the thin runtime: the base dependencies of that pyproject.toml plus [onnx].
FULL_BEFORE = ["torch>=2.4", "diffusers>=0.32", "transformers>=4.45", "safetensors>=0.4", "numpy>=1.24",
               "pillow>=10.0", "scipy>=1.10", "scikit-image>=0.22", "tqdm>=4.60", "onnx>=1.16",
               "onnxruntime>=1.18"]
MINIMAL = ["refocus-edge[onnx]"]
# Driver for the "before" variant: the same CLI, with the run's model loaded for the PyTorch sampler.
TORCH_SAMPLER_DRIVER = """
import sys
from refocus_edge.runtime import run_model as sampling
from refocus_edge.cli.main import main

def torch_sampler(model, unet, mode, backend, precision, low_memory, decoder=None):
    from refocus_edge.runtime.loading import load_refocuser
    return sampling.RunModel(load_refocuser(model, unet=unet, backend=backend, precision=precision,
                                            low_memory=low_memory, decoder=decoder), thin=False)

sampling.load_run_model = torch_sampler
sys.exit(main(sys.argv[1:]))
"""


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_bundle(model: str, bundle: Path) -> Path:
    if (bundle / "manifest.json").is_file():
        return bundle
    subprocess.run([sys.executable, "-m", "refocus_edge.cli", "export", "onnx", "--model", model, "--out",
                    str(bundle), "--force"], check=True)
    return bundle


def make_min_venv(folder: Path) -> Path:
    """A fresh venv with only the project and its [onnx] extra (pip's own packages aside); the project
    itself is reinstalled from this checkout on every call, so the venv runs the code measured."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{REPO}[onnx]"], check=True)
    else:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(REPO)],
                       check=True)
    return python


def variants(bundle: Path, python_min: Path | None, with_dof: bool) -> list[dict]:
    run = ["run", str(PHOTO), "--model", str(bundle), "--backend", "onnxruntime", "--quiet", "--force"]
    hidden = {"PYTHONPATH": str(NO_TORCH)}
    out = []
    for dof in ([False, True] if with_dof else [False]):
        args = run + ([] if dof else ["--no-dof"])
        tag = "" if not dof else ", with views"
        out += [
            {"name": "thin, torch importable" + tag, "cmd": [sys.executable, "-m", "refocus_edge.cli", *args], "env": {}},
            {"name": "thin, torch hidden" + tag, "cmd": [sys.executable, "-m", "refocus_edge.cli", *args], "env": hidden},
        ]
        if python_min is not None:
            out.append({"name": "thin, minimal venv" + tag, "cmd": [str(python_min), "-m", "refocus_edge.cli", *args],
                        "env": {}})
        out.append({"name": "torch sampler (before)" + tag,
                    "cmd": [sys.executable, "-c", TORCH_SAMPLER_DRIVER, *args], "env": {}})
    return out


def _once(variant: dict, scratch: Path) -> dict:
    out = scratch / "out"
    env = {**os.environ, **variant["env"]}
    t0 = time.perf_counter()
    # From a scratch folder: in the repository root its refocus_edge/ stub would shadow an installed package.
    proc = subprocess.run([*variant["cmd"], "--out", str(out)], env=env, cwd=scratch, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{variant['name']} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    meta = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "load_model_s": meta["timings_s"]["load_model"], "runtime": meta.get("runtime"),
            "files": len(meta["files"])}


def cold_start(bundle: Path, python_min: Path | None, repeats: int, with_dof: bool, progress=True) -> list[dict]:
    vs = variants(bundle, python_min, with_dof)
    runs: dict[str, list[dict]] = {v["name"]: [] for v in vs}
    scratch = Path(tempfile.mkdtemp(prefix="thin-runtime-bench-"))
    try:
        for v in vs:  # warm-up round: file caches, .pyc files
            _once(v, scratch)
        for r in range(repeats):
            for v in vs:
                runs[v["name"]].append(_once(v, scratch))
            if progress:
                print(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {x[-1]['wall_s']:.2f}s"
                                                              for n, x in runs.items()), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for v in vs:
        walls = [x["wall_s"] for x in runs[v["name"]]]
        rows.append({"variant": v["name"], "median_s": round(statistics.median(walls), 3),
                     "min_s": round(min(walls), 3), "max_s": round(max(walls), 3),
                     "load_model_median_s": round(statistics.median(x["load_model_s"] for x in runs[v["name"]]), 3),
                     "runtime": runs[v["name"]][0]["runtime"], "files": runs[v["name"]][0]["files"],
                     "walls_s": [round(w, 3) for w in walls],
                     "command": " ".join(v["cmd"][:2] + ["..."] if "-c" in v["cmd"] else v["cmd"]),
                     "env": v["env"]})
    return rows


def _distributions(site: str | None) -> dict:
    from importlib import metadata

    found = {}
    for dist in (metadata.distributions(path=[site]) if site else metadata.distributions()):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        found.setdefault(name, dist)
    return found


def closure_size(requirements: list[str], site: str | None = None) -> dict:
    """Bytes of the files (RECORD) of every distribution the requirements pull in, extras followed."""
    from packaging.requirements import Requirement

    dists = _distributions(site)
    sizes, todo = {}, [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        name = req.name.lower().replace("_", "-")
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        dist = dists.get(name)
        if dist is None:
            raise RuntimeError(f"{name} is not installed in {site or 'this environment'}")
        key = (name, tuple(sorted(req.extras)))
        if key in sizes:
            continue
        sizes[key] = sum((f.size or 0) for f in (dist.files or []))
        for line in dist.requires or []:
            sub = Requirement(line)
            for ex in [""] + sorted(req.extras):
                if sub.marker is None or sub.marker.evaluate({"extra": ex}):
                    todo.append((sub, ex))
                    break
    per_dist: dict[str, int] = {}
    for (name, _), size in sizes.items():
        per_dist[name] = max(per_dist.get(name, 0), size)  # a package counted once, extras or not
    return {"bytes": sum(per_dist.values()), "distributions": dict(sorted(per_dist.items(), key=lambda kv: -kv[1]))}


def du_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def installed_size(python_min: Path | None) -> dict:
    full = closure_size(FULL_BEFORE)
    res = {"full_before": {"requirements": FULL_BEFORE, **full}}
    if python_min is not None:
        site = subprocess.run([str(python_min), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        minimal = closure_size(MINIMAL, site)
        res["minimal"] = {"requirements": MINIMAL, **minimal, "site_packages_du_bytes": du_bytes(Path(site)),
                          "site_packages": site}
    return res


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def _markdown(res: dict) -> str:
    lines = ["# The thin runtime: cold start and installed size", "",
             f"- command: `{res['command']}`",
             f"- bundle: `refocus export onnx --model {res['model']}` (fp32), photo `samples/coffee.jpg` "
             f"(-> 128x128), `--backend onnxruntime`; {res['threads']} thread(s); load average before "
             f"{res['load_before']}, after {res['load_after']} (the machine is shared: 2 cores)",
             f"- wall time of a fresh `refocus run` process, exec to exit; median (min..max) of {res['repeats']} "
             "interleaved rounds after one warm-up round", "",
             "| variant | runtime | files | cold start | load_model stage |", "|---|---|---|---|---|"]
    for r in res["cold_start"]:
        lines.append(f"| {r['variant']} | {r['runtime']} | {r['files']} | **{r['median_s']:.2f} s** "
                     f"({r['min_s']:.2f}..{r['max_s']:.2f}) | {r['load_model_median_s']:.2f} s |")
    size = res["installed_size"]
    lines += ["", "| environment | requirements | installed (RECORD sizes of the closure) |", "|---|---|---|",
              f"| today's full install | {', '.join(size['full_before']['requirements'])} | "
              f"**{_mib(size['full_before']['bytes'])}** |"]
    if "minimal" in size:
        m = size["minimal"]
        lines.append(f"| minimal runtime | {', '.join(m['requirements'])} | **{_mib(m['bytes'])}** "
                     f"(site-packages with pip: {_mib(m['site_packages_du_bytes'])}) |")
        lines += ["", "Minimal runtime, per distribution: " + ", ".join(
            f"{n} {_mib(b)}" for n, b in m["distributions"].items())]
    lines += ["", "Largest in the full install: " + ", ".join(
        f"{n} {_mib(b)}" for n, b in list(size["full_before"]["distributions"].items())[:8]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="refocus-tiny-1step", help="model to export the bundle from (default: the default model)")
    ap.add_argument("--bundle", type=Path, default=REPO / "out" / "thin-runtime" / "bundle",
                    help="bundle folder; exported there if missing")
    ap.add_argument("--min-venv", type=Path, default=None,
                    help="folder for a fresh venv with only `pip install .[onnx]` (made if missing); "
                         "without it the minimal variant and size are left out")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--with-dof", action="store_true", help="also time the default run (with the views)")
    ap.add_argument("--out", type=Path, default=None, help="folder for thin_runtime.json and thin_runtime.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    bundle = ensure_bundle(args.model, args.bundle.resolve())
    python_min = make_min_venv(args.min_venv.resolve()) if args.min_venv is not None else None
    load_before = load_average()
    rows = cold_start(bundle, python_min, args.repeats, args.with_dof)
    res = {"command": command_line("thin_runtime", argv), "model": args.model,
           "threads": os.environ.get("OMP_NUM_THREADS", "default"), "repeats": args.repeats,
           "load_before": load_before, "load_after": load_average(), "cold_start": rows,
           "installed_size": installed_size(python_min), "wall_s": round(time.perf_counter() - t0, 1)}
    write_results(args.out, "thin_runtime", res, _markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
