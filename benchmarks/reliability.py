"""Reliability benchmark (issue 20): kills at random instants, concurrent writers, hostile images.

Three experiments, each in fresh processes, each case checked against the exact state it must
leave:

* **kills**: `refocus run --force` over a finished result, SIGKILLed after a random delay
  drawn across the run's whole duration (loading, sampling, writing, publishing). Afterwards
  the folder must hold one complete result, the old or the new, byte for byte (frame hashes of
  clean runs with both seeds are the reference); then the next run must succeed and leave no
  hidden leftovers.
* **export kills**: the same for `refocus export onnx --force` over a finished bundle: after the
  kill every checksum of the bundle must verify (old or new), and the next export must succeed.
* **writers**: M `refocus run` processes started together into one new folder: exactly one
  succeeds, every other fails at once with the lock message, and the folder is complete.
* **images**: hostile files (declared sizes up to the 1000 MP bomb limit, damaged data, link
  loops) through `load_photo` in a fresh process each: the outcome and its peak memory
  (VmHWM).

    python -m benchmarks.reliability --kills 12 --export-kills 4 --writers 4 --out benchmarks/results/reliability
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


def _kill_after(command: list[str], delay: float) -> int:
    """Start `command`, SIGKILL it after `delay` seconds (if still running); its exit code."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def kills(n: int, work: Path, rng: random.Random, log) -> dict:
    out = work / "stack"
    ref = {}
    for seed in (1, 2):  # clean references: what "old" (seed 1) and "new" (seed 2) look like
        folder = work / f"ref{seed}"
        assert _run(folder, seed).returncode == 0
        ref[seed] = _digest(folder)
    t0 = time.perf_counter()
    assert _run(out, 1).returncode == 0
    duration = time.perf_counter() - t0
    rows = []
    for i in range(n):
        delay = rng.uniform(0, duration * 1.1)
        code = _kill_after(RUN + ["--out", str(out), "--seed", "2", "--force"], delay)
        state = _digest(out) if out.is_dir() else None
        found = next((f"seed {s}" for s, d in ref.items() if d == state), "MIX" if state else "missing")
        hidden = _leftovers(out)
        nxt = _run(out, 1)  # the next writer recovers and restores seed 1 for the next round
        ok = found != "MIX" and nxt.returncode == 0 and _digest(out) == ref[1] and not _leftovers(out)
        rows.append({"case": i, "kill_after_s": round(delay, 2), "killed": code == -signal.SIGKILL,
                     "found": found, "hidden_after_kill": hidden, "next_run_ok": nxt.returncode == 0, "ok": ok,
                     **({} if nxt.returncode == 0 else {"next_run_error": nxt.stderr.strip().splitlines()[-1:]})})
        log(f"kill {i:2d} after {delay:5.2f}s: {found:8s} hidden {hidden} next run {'ok' if ok else 'FAILED'}")
    return {"run_s": round(duration, 2), "rows": rows}


EXPORT = [sys.executable, "-m", "refocus_edge.cli", "export", "onnx", "--force"]


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


def export_kills(n: int, work: Path, rng: random.Random, log) -> dict:
    """`refocus export onnx --force` over a finished bundle, SIGKILLed at random instants: the
    bundle must stay the complete old one or become the complete new one (every checksum holds)."""
    out = work / "bundle"
    t0 = time.perf_counter()
    assert subprocess.run(EXPORT + ["--out", str(out)], cwd=REPO, capture_output=True).returncode == 0
    duration = time.perf_counter() - t0
    rows = []
    for i in range(n):
        delay = rng.uniform(0, duration * 1.1)
        _kill_after(EXPORT + ["--out", str(out)], delay)
        state, hidden = _bundle_state(out), _leftovers(out)
        nxt = subprocess.run(EXPORT + ["--out", str(out)], cwd=REPO, capture_output=True, text=True)
        ok = state.startswith("complete") and nxt.returncode == 0 and _bundle_state(out).startswith("complete") \
            and not _leftovers(out)
        rows.append({"case": i, "kill_after_s": round(delay, 2), "state": state, "hidden_after_kill": hidden,
                     "next_export_ok": nxt.returncode == 0, "ok": ok})
        log(f"export kill {i} after {delay:5.1f}s: {state[:40]} hidden {hidden} next {'ok' if ok else 'FAILED'}")
    return {"export_s": round(duration, 2), "rows": rows}


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


def markdown(res: dict) -> str:
    k, e, w, im = res["kills"], res["export_kills"], res["writers"], res["images"]
    lines = ["# Reliability: kills, concurrent writers, hostile images", "", f"- command: `{res['command']}`",
             f"- machine: {res['machine']}; {res['date']}", "",
             f"## SIGKILL at a random instant of `refocus run --force` ({len(k['rows'])} cases; a clean run takes "
             f"{k['run_s']} s)", "",
             "| case | killed after | folder holds | hidden leftovers after the kill | next run recovers | ok |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['kill_after_s']} s | {r['found']} | {', '.join(r['hidden_after_kill']) or '-'} | "
              f"{'yes' if r['next_run_ok'] else 'NO'} | {'yes' if r['ok'] else 'NO'} |" for r in k["rows"]]
    counts = {}
    for r in k["rows"]:
        counts[r["found"]] = counts.get(r["found"], 0) + 1
    lines += ["", "Outcomes: " + ", ".join(f"{v} x {key}" for key, v in sorted(counts.items()))
              + f"; all ok: {all(r['ok'] for r in k['rows'])}.", "",
              f"## SIGKILL at a random instant of `refocus export onnx --force` ({len(e['rows'])} cases; an export "
              f"takes {e['export_s']} s)", "",
              "| case | killed after | bundle after the kill (every checksum verified) | hidden leftovers | "
              "next export | ok |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['kill_after_s']} s | {r['state']} | {', '.join(r['hidden_after_kill']) or '-'} | "
              f"{'yes' if r['next_export_ok'] else 'NO'} | {'yes' if r['ok'] else 'NO'} |" for r in e["rows"]]
    lines += ["", f"## {w['writers']} writers started together into one new folder", "",
              f"{w['succeeded']} succeeded, {w['refused_locked']} refused at once with the lock message; folder "
              f"complete: {w['complete']}; ok: {w['ok']}.", "",
              "## Hostile images through `load_photo` (fresh process each; peak = VmHWM above the imports)", "",
              "| image | outcome | peak memory |", "|---|---|---|"]
    lines += [f"| {r['image']} | {r['outcome']} | {r['peak_mib']} MiB |" for r in im["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="random-instant kills of a forced run (default 20)")
    p.add_argument("--export-kills", type=int, default=4,
                   help="random-instant kills of a forced `refocus export onnx` (default 4)")
    p.add_argument("--writers", type=int, default=4, help="concurrent writers into one folder (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill instants (default 0)")
    p.add_argument("--out", type=Path, default=Path("out/reliability"))
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="refocus-reliability-") as tmp:
        work = Path(tmp)
        res = {"command": f"python -m benchmarks.reliability --kills {args.kills} --export-kills {args.export_kills} "
                          f"--writers {args.writers} "
                          f"--seed {args.seed} --out {args.out}",
               "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
               "date": time.strftime("%Y-%m-%d"),
               "kills": kills(args.kills, work, random.Random(args.seed), log),
               "export_kills": export_kills(args.export_kills, work, random.Random(args.seed + 1), log),
               "writers": writers(args.writers, work, log), "images": images(work, log)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "reliability.md").write_text(markdown(res))
    ok = all(r["ok"] for r in res["kills"]["rows"] + res["export_kills"]["rows"]) and res["writers"]["ok"]
    print(args.out / "reliability.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
