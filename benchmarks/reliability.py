"""Reliability benchmark (issue 20): kills at random instants, concurrent writers, hostile images.

Three experiments, each in fresh processes, each case checked against the exact state it must
leave:

* **kills**: `refocus run --force` over a finished result, SIGKILLed after a random delay
  drawn across the run's whole duration (loading, sampling, writing, publishing). Afterwards
  the folder must hold one complete result, the old or the new, byte for byte (frame hashes of
  clean runs with both seeds are the reference); then the next run must succeed and leave no
  hidden leftovers.
* **export, quantize and distill kills**: the same for `refocus export onnx --force`, `refocus
  quantize --recipe fp16 --force` (after the kill every checksum of the bundle must verify, old or
  new) and a small `refocus distill --force` (the student folder must still load), and the next
  command must succeed.
* Half of every experiment's kills land at a random instant of the whole command, half at a random
  instant after its staging folder appears: the writing-and-publishing window, too short for
  instants drawn over the whole run to hit often.
* **writers**: M `refocus run` processes started together into one new folder: exactly one
  succeeds, every other fails at once with the lock message, and the folder is complete.
* **images**: hostile files (declared sizes up to the 1000 MP bomb limit, damaged data, link
  loops) through `load_photo` in a fresh process each: the outcome and its peak memory
  (VmHWM).

    python -m benchmarks.reliability --kills 12 --export-kills 4 --quantize-kills 2 --distill-kills 2 \
        --writers 4 --out benchmarks/results/reliability
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "samples" / "coffee.jpg"
RUN = [sys.executable, "-m", "refocus_edge.cli", "run", str(PHOTO), "--quiet", "--no-dof"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != "run.json"}


def _run(out: Path, seed: int, force: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(RUN + ["--out", str(out), "--seed", str(seed)] + (["--force"] if force else []),
                          cwd=REPO, capture_output=True, text=True)


def _kill_after(command: list[str], delay: float, out: Path | None = None) -> tuple[int, float]:
    """Start `command` and SIGKILL it `delay` seconds after its start, or, when `out` is given, `delay`
    seconds after a staging folder of `out` appears (the kill then lands in writing or publishing,
    a window too short for a kill at a random instant of the whole run to hit often).
    Returns (exit code, seconds from the start to the kill)."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    if out is not None:
        while proc.poll() is None and not _staging(out):
            time.sleep(0.001)
    time.sleep(delay)
    at = time.perf_counter() - t0
    proc.send_signal(signal.SIGKILL)
    return proc.wait(), at


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _staging(out: Path) -> bool:
    return any(p.name.startswith(f".{out.name}.staging") for p in out.parent.iterdir())


def _timed(command: list[str], out: Path) -> tuple[float, float]:
    """A clean run of `command`: (its duration, seconds from its staging folder's appearance to its end)."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0, staged = time.perf_counter(), None
    while proc.poll() is None:
        if staged is None and _staging(out):
            staged = time.perf_counter()
        time.sleep(0.001)
    end = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"clean run failed: {' '.join(command)}: {proc.stderr.strip()[-300:]}")
    return end - t0, end - (staged or end)


def kill_cases(label: str, command: list[str], out: Path, n: int, rng: random.Random, state, good, log,
               next_command: list[str] | None = None) -> dict:
    """`n` SIGKILLs of `command` (which writes `out` over a finished result): even cases at a random
    instant of the whole run, odd cases at a random instant of its writing-and-publishing window
    (after its staging folder appears). After each kill `state(out)` must satisfy `good`, then
    `next_command` (default: `command`) must succeed, leave a good state and no hidden leftovers."""
    duration, window = _timed(command, out)
    rows = []
    for i in range(n):
        staged = i % 2 == 1
        delay = rng.uniform(0, window * 1.2 if staged else duration * 1.1)
        code, at = _kill_after(command, delay, out if staged else None)
        found, hidden = state(out), _leftovers(out)
        nxt = subprocess.run(next_command or command, cwd=REPO, capture_output=True, text=True)
        after = state(out)
        ok = good(found) and nxt.returncode == 0 and good(after) and not _leftovers(out)
        rows.append({"case": i, "trigger": "staging folder appears" if staged else "start",
                     "kill_after_s": round(delay, 3), "killed_at_s": round(at, 2),
                     "killed": code == -signal.SIGKILL, "found": found, "hidden_after_kill": hidden,
                     "next_ok": nxt.returncode == 0, "ok": ok,
                     **({} if nxt.returncode == 0 else {"next_error": nxt.stderr.strip().splitlines()[-1:]})})
        log(f"{label} kill {i:2d} ({rows[-1]['trigger']} + {delay:6.3f}s): {found[:40]:40s} hidden {hidden} "
            f"next {'ok' if ok else 'FAILED'}")
    return {"label": label, "command": " ".join(Path(c).name if c == sys.executable else c for c in command),
            "duration_s": round(duration, 2), "window_s": round(window, 3), "rows": rows}


def kills(n: int, work: Path, rng: random.Random, log) -> dict:
    """`refocus run --force` (seed 2) over a finished result (seed 1): the folder must hold one of the
    two byte for byte; the next run (seed 1) restores seed 1 for the next case."""
    out = work / "stack"
    ref = {}
    for seed in (1, 2):  # clean references: what "old" (seed 1) and "new" (seed 2) look like
        folder = work / f"ref{seed}"
        assert _run(folder, seed).returncode == 0
        ref[seed] = _digest(folder)
    assert _run(out, 1).returncode == 0

    def state(folder: Path) -> str:
        found = _digest(folder) if folder.is_dir() else None
        return next((f"seed {s}" for s, d in ref.items() if d == found), "MIX" if found else "missing")

    run = lambda seed: RUN + ["--out", str(out), "--seed", str(seed), "--force"]  # noqa: E731
    return kill_cases("run", run(2), out, n, rng, state, lambda s: s.startswith("seed"), log, next_command=run(1))


EXPORT = [sys.executable, "-m", "refocus_edge.cli", "export", "onnx", "--force"]
QUANTIZE = [sys.executable, "-m", "refocus_edge.cli", "quantize", "--recipe", "fp16", "--force", "--quiet"]


def _bundle_state(folder: Path) -> str:
    """'complete <content hash>' when every file the manifest lists verifies, else what is wrong."""
    from refocus_edge.runtime.bundle import read_bundle
    from refocus_edge.runtime.errors import RefocusError

    if not folder.exists():
        return "missing"
    try:
        bundle = read_bundle(folder)
        for rel in bundle.manifest.files:
            bundle.verify(rel)
    except RefocusError as exc:
        return f"BROKEN: {exc}"
    return f"complete {bundle.content_hash[:12]}"


def _model_state(folder: Path) -> str:
    """'complete <UNet weights hash>' when the folder loads as a refocuser, else what is wrong."""
    from refocus_edge.runtime.errors import RefocusError
    from refocus_edge.runtime.loading import load_refocuser

    if not folder.exists():
        return "missing"
    try:
        load_refocuser(folder)
    except (RefocusError, OSError, ValueError) as exc:
        return f"BROKEN: {type(exc).__name__}: {exc}"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    return f"complete {hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"


def _complete(state: str) -> bool:
    return state.startswith("complete")


def export_kills(n: int, work: Path, rng: random.Random, log) -> dict:
    """`refocus export onnx --force` over a finished bundle: the bundle must stay the complete old one
    or become the complete new one (every checksum holds)."""
    out = work / "bundle"
    command = EXPORT + ["--out", str(out)]
    assert subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0
    return kill_cases("export", command, out, n, rng, _bundle_state, _complete, log)


def quantize_kills(n: int, work: Path, rng: random.Random, log) -> dict:
    """`refocus quantize --recipe fp16 --force` over a finished bundle, checked like an export."""
    out = work / "quantized"
    command = QUANTIZE + ["--out", str(out)]
    assert subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0
    return kill_cases("quantize", command, out, n, rng, _bundle_state, _complete, log)


def distill_kills(n: int, work: Path, rng: random.Random, log) -> dict:
    """A small `refocus distill --force` (ground-truth objective, 8 stacks, 2 updates; its cache and
    checkpoints in the work folder) over a finished student: the student folder must stay a complete
    model that loads, and the next distill must succeed (resuming from whatever the kill left)."""
    out = work / "student"
    command = [sys.executable, "-m", "refocus_edge.cli", "distill", "--teacher", "refocus-tiny",
               "--objective", "ground-truth", "--steps", "1", "--samples", "8", "--iterations", "2", "--batch", "1",
               "--perceptual-weight", "0", "--out", str(out), "--run-dir", str(work / "distill-run"),
               "--cache", str(work / "distill-cache"), "--force"]
    assert subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0
    return kill_cases("distill", command, out, n, rng, _model_state, _complete, log)


def writers(m: int, work: Path, log) -> dict:
    out = work / "shared"
    procs = [subprocess.Popen(RUN + ["--out", str(out), "--seed", str(10 + i)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(m)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    winners = [i for i, (code, _) in enumerate(results) if code == 0]
    locked = [i for i, (code, err) in enumerate(results) if code == 2 and "is writing this folder now" in err]
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    complete = bool(meta) and all((out / f).is_file() for f in meta.get("files", []))
    ok = len(winners) == 1 and len(locked) == m - 1 and complete and meta.get("seed") == 10 + winners[0]
    log(f"writers {m}: {len(winners)} succeeded, {len(locked)} refused with the lock message, "
        f"folder complete {complete}")
    return {"writers": m, "succeeded": len(winners), "refused_locked": len(locked), "complete": complete, "ok": ok}


def _png_header_only(path: Path, w: int, h: int, color_type: int = 6) -> Path:
    """A PNG that declares w x h pixels (RGBA by default) with one tiny IDAT: a decompression bomb
    would be this header with highly compressible data; the decoder must decide before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


LOAD = """
import json, sys
from refocus_edge.runtime.errors import RefocusError
from refocus_edge.runtime.image_io import load_photo
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
base = hwm()
try:
    photo = load_photo(sys.argv[1], max_side_hint=2048)
    outcome = "decoded %dx%d" % photo.source_size
except RefocusError as exc:
    outcome = "refused: " + str(exc).split(": ", 1)[-1]
print(json.dumps({"outcome": outcome, "peak_mib": round((hwm() - base) / 2 ** 20, 1)}))
"""


def images(work: Path, log) -> dict:
    from PIL import Image
    import numpy as np

    cases = {
        "998 MP RGBA PNG (declared)": _png_header_only(work / "998mp.png", 31600, 31600),
        "400 MP RGBA PNG (declared)": _png_header_only(work / "400mp.png", 20000, 20000),
        "1001 MP PNG (over the bomb limit)": _png_header_only(work / "bomb.png", 31700, 31600),
        "100 MP RGB PNG (declared)": _png_header_only(work / "100mp.png", 10000, 10000, color_type=2),
    }
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (750, 1000, 3), dtype=np.uint8)).resize((8000, 6000))
    big.save(work / "48mp.jpg", quality=90)
    cases["48 MP JPEG (real pixels)"] = work / "48mp.jpg"
    big.crop((0, 0, 6000, 6000)).save(work / "36mp.png", compress_level=1)
    cases["36 MP RGB PNG (real pixels)"] = work / "36mp.png"
    ok = work / "ok.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(ok)
    data = bytearray(ok.read_bytes())
    data[29] ^= 0xFF
    (work / "badcrc.png").write_bytes(bytes(data))
    cases["PNG with a bad IHDR CRC"] = work / "badcrc.png"
    (work / "loop_a.png").symlink_to(work / "loop_b.png")
    (work / "loop_b.png").symlink_to(work / "loop_a.png")
    cases["symlink loop"] = work / "loop_a.png"
    rows = []
    for name, path in cases.items():
        proc = subprocess.run([sys.executable, "-c", LOAD, str(path)], cwd=REPO, capture_output=True, text=True)
        row = json.loads(proc.stdout) if proc.returncode == 0 else {"outcome": f"CRASH {proc.stderr[-200:]}",
                                                                     "peak_mib": None}
        rows.append({"image": name, **row})
        log(f"{name:36s} {row['outcome'][:90]:90s} peak {row['peak_mib']} MiB")
    return {"rows": rows}


KILL_EXPERIMENTS = {"kills": kills, "export_kills": export_kills, "quantize_kills": quantize_kills,
                    "distill_kills": distill_kills}


def _kill_section(k: dict) -> list[str]:
    lines = [f"## SIGKILL of `{k['command'].split(' --out')[0]}` ({len(k['rows'])} cases; a clean run takes "
             f"{k['duration_s']} s, of which {k['window_s']} s after its staging folder appears)", "",
             "| case | trigger | killed after | folder after the kill | hidden leftovers after the kill | "
             "next run recovers | ok |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['trigger']} | {r['kill_after_s']} s | {r['found']} | "
              f"{', '.join(r['hidden_after_kill']) or '-'} | {'yes' if r['next_ok'] else 'NO'} | "
              f"{'yes' if r['ok'] else 'NO'} |" for r in k["rows"]]
    counts = {}
    for r in k["rows"]:
        counts[r["found"]] = counts.get(r["found"], 0) + 1
    return lines + ["", "Outcomes: " + ", ".join(f"{v} x {key}" for key, v in sorted(counts.items()))
                    + f"; all ok: {all(r['ok'] for r in k['rows'])}.", ""]


def markdown(res: dict) -> str:
    w, im = res["writers"], res["images"]
    lines = ["# Reliability: kills, concurrent writers, hostile images", "", f"- command: `{res['command']}`",
             f"- machine: {res['machine']}; {res['date']}",
             "- even cases are killed at a random instant of the whole run, odd cases at a random instant after "
             "the staging folder appears (writing and publishing)", ""]
    for key in KILL_EXPERIMENTS:
        if res.get(key) and res[key]["rows"]:
            lines += _kill_section(res[key])
    lines += [f"## {w['writers']} writers started together into one new folder", "",
              f"{w['succeeded']} succeeded, {w['refused_locked']} refused at once with the lock message; folder "
              f"complete: {w['complete']}; ok: {w['ok']}.", "",
              "## Hostile images through `load_photo` (fresh process each; peak = VmHWM above the imports)", "",
              "| image | outcome | peak memory |", "|---|---|---|"]
    lines += [f"| {r['image']} | {r['outcome']} | {r['peak_mib']} MiB |" for r in im["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kills of a forced `refocus run` (default 20)")
    p.add_argument("--export-kills", type=int, default=4, help="kills of a forced `refocus export onnx` (default 4)")
    p.add_argument("--quantize-kills", type=int, default=2,
                   help="kills of a forced `refocus quantize --recipe fp16` (default 2; minutes each)")
    p.add_argument("--distill-kills", type=int, default=2, help="kills of a small forced `refocus distill` (default 2)")
    p.add_argument("--writers", type=int, default=4, help="concurrent writers into one folder (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill instants (default 0)")
    p.add_argument("--out", type=Path, default=Path("out/reliability"))
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    counts = {"kills": args.kills, "export_kills": args.export_kills, "quantize_kills": args.quantize_kills,
              "distill_kills": args.distill_kills}
    with tempfile.TemporaryDirectory(prefix="refocus-reliability-") as tmp:
        work = Path(tmp)
        res = {"command": "python -m benchmarks.reliability " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in counts.items())
                   + f" --writers {args.writers} --seed {args.seed} --out {args.out}",
               "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
               "date": time.strftime("%Y-%m-%d")}
        for i, (key, run) in enumerate(KILL_EXPERIMENTS.items()):
            res[key] = run(counts[key], work, random.Random(args.seed + i), log) if counts[key] else None
        res["writers"] = writers(args.writers, work, log)
        res["images"] = images(work, log)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "reliability.md").write_text(markdown(res))
    rows = [r for key in KILL_EXPERIMENTS if res[key] for r in res[key]["rows"]]
    ok = all(r["ok"] for r in rows) and res["writers"]["ok"]
    print(args.out / "reliability.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
