"""Peak memory of one focal stack with and without `--low-memory`.

Each configuration runs in a fresh Python process (so the peak RSS is its own):
load the model, sample one stack of a held-out synthetic photo in fast mode,
report the RSS high-water mark. Low-memory mode holds one component at a time
and reloads the VAE for decoding; the table shows what that saves and costs.

    python -m benchmarks.memory --model refocus-tiny --model out/bundle-tiny --out benchmarks/results/memory
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
from refocus_edge.bench.timing import peak_rss_mib
from refocus_edge.runtime.loading import load_refocuser
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack
from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
model, low, backend = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
base = peak_rss_mib()
t0 = time.perf_counter()
r = load_refocuser(model, low_memory=low, backend=None if backend == "auto" else backend)
load_s = time.perf_counter() - t0
w, h = r.config.fixed_size or (128, 128)
image = SyntheticFocalStacks("heldout", size=(h, w), length=1)[0]["frames"][4:5] * 2 - 1
t0 = time.perf_counter()
frames = sample_focal_stack(r, image, SamplerConfig(seed=0, progress=False)).frames
print(json.dumps({"peak_mib": peak_rss_mib(), "import_mib": base,
                  "load_s": load_s, "sample_s": time.perf_counter() - t0,
                  "backends": sorted({c.backend for c in r.choices}) or ["torch"],
                  "checksum": float(frames.double().sum())}))
"""


def measure(model: str, low_memory: bool, backend: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, model, "1" if low_memory else "0", backend],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} (low_memory={low_memory}) failed:\n{proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None, help="model or bundle (repeatable)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", type=Path, default=Path("out/memory"))
    args = p.parse_args(argv)
    models = args.model or ["refocus-tiny"]
    rows = []
    for model in models:
        for low in (False, True):
            row = {"model": model, "low_memory": low, **measure(model, low, args.backend)}
            rows.append(row)
            print(f"{model:28s} low_memory={str(low):5s} peak {row['peak_mib']:7.0f} MiB  "
                  f"load {row['load_s']:.2f} s  sample {row['sample_s']:.2f} s", file=sys.stderr)
    command = "python -m benchmarks.memory " + " ".join(f"--model {m}" for m in models) + f" --out {args.out}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    md = ["# Peak memory with and without --low-memory", "", f"`{command}`", "",
          "Fresh process per row; peak = RSS high-water mark (Python + torch imports included: "
          "see the 'imports' column); one 128x128 stack, fast mode, seed 0.", "",
          "| model | low memory | imports (MiB) | peak (MiB) | load | sample | same frames |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ref = next(r for r in rows if r["model"] == row["model"] and not r["low_memory"])
        md.append(f"| {row['model']} ({', '.join(row['backends'])}) | {'yes' if row['low_memory'] else 'no'} | "
                  f"{row['import_mib']:.0f} | {row['peak_mib']:.0f} | {row['load_s']:.2f} s | "
                  f"{row['sample_s']:.2f} s | {'yes' if row['checksum'] == ref['checksum'] else 'NO'} |")
    (args.out / "memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
