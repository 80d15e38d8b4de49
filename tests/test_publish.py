"""runtime/publish.py under faults: a real SIGKILL at every publishing step (with the atomic exchange
and with the two-rename fallback), concurrent writers, and the recovery of leftovers. Each case
checks the exact folder state afterwards."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lock_holder import lock_held_elsewhere
from refocus_edge.runtime import publish as pub
from refocus_edge.runtime.publish import OutputLockedError, output_lock, publishing, recover

REPO = Path(__file__).resolve().parents[1]
STEPS = ("staged", "carried", "ready", "swapped", "cleaned")
RESULT = ("frame_0.png", "frame_1.png", "run.json")  # the files a "run" writes


def _write_result(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in RESULT:
        (folder / name).write_text(version)


def _versions(folder: Path) -> set[str]:
    """The versions the result files of `folder` come from (one element = not a mix)."""
    return {(folder / name).read_text() for name in RESULT if (folder / name).exists()} | \
        ({"<missing file>"} if any(not (folder / n).exists() for n in RESULT) else set())


def _publish_in_subprocess(dest: Path, version: str, kill_at: str | None, exchange: bool) -> int:
    """Publish `version` into `dest` in a fresh process that SIGKILLs itself at step `kill_at`."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from refocus_edge.runtime import publish as pub
        if not {exchange!r}:
            pub._exchange = lambda a, b: False
        pub._fault = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == {kill_at!r} else None
        dest = Path({str(dest)!r})
        with pub.publishing(dest, carry_over=lambda name: name not in {RESULT!r}) as stage:
            for name in {RESULT!r}:
                (stage / name).write_text({version!r})
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True).returncode


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_leaves_old_or_new_and_the_next_writer_recovers(tmp_path, step, exchange):
    if exchange and not pub._exchange(tmp_path, tmp_path):  # a self-exchange probes support
        pytest.skip("this filesystem or libc has no renameat2(RENAME_EXCHANGE)")
    dest = tmp_path / "out"
    _write_result(dest, "old")
    (dest / "notes.txt").write_text("mine")  # a user's file: carried over, never lost
    (dest / "edit").mkdir()
    (dest / "edit" / "edited.png").write_text("mine too")

    code = _publish_in_subprocess(dest, "new", step, exchange)
    assert code == -signal.SIGKILL

    new_wins = STEPS.index(step) >= STEPS.index("swapped")
    if dest.exists():  # right after the kill: complete old or complete new, never a mix
        assert _versions(dest) == ({"new"} if new_wins else {"old"})
    else:  # only the two-rename fallback has an instant without the folder; recovery fixes it
        assert not exchange and step == "swapped"
    assert (dest / "notes.txt").read_text() == "mine" if dest.exists() else True

    with output_lock(dest):
        recover(dest)
    assert _versions(dest) == ({"new"} if new_wins else {"old"})
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "edit" / "edited.png").read_text() == "mine too"
    assert _leftovers(dest) == []  # no staging, ready, old folder or lock file remains


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_an_unkilled_publish_replaces_only_our_files_and_leaves_nothing_behind(tmp_path, exchange):
    dest = tmp_path / "out"
    _write_result(dest, "old")
    (dest / "notes.txt").write_text("mine")
    assert _publish_in_subprocess(dest, "new", None, exchange) == 0
    assert _versions(dest) == {"new"} and (dest / "notes.txt").read_text() == "mine"
    assert _leftovers(dest) == []
    # a new destination appears whole
    fresh = tmp_path / "fresh"
    assert _publish_in_subprocess(fresh, "v1", None, exchange) == 0
    assert _versions(fresh) == {"v1"} and _leftovers(fresh) == []


def test_an_error_while_staging_leaves_the_old_result_and_no_staging(tmp_path):
    dest = tmp_path / "out"
    _write_result(dest, "old")
    with pytest.raises(KeyboardInterrupt):
        with publishing(dest) as stage:
            (stage / "frame_0.png").write_text("new")
            raise KeyboardInterrupt
    assert _versions(dest) == {"old"} and _leftovers(dest) == []


def test_a_second_writer_fails_at_once_naming_the_holder_or_waits(tmp_path):
    dest = tmp_path / "out"
    with lock_held_elsewhere(dest, seconds=1.5) as pid:
        with pytest.raises(OutputLockedError, match=rf"{dest}: pid {pid} is writing this folder now.*--wait"):
            with publishing(dest):
                pass
        t0 = time.monotonic()
        with publishing(dest, wait=True) as stage:  # waits for the holder, then writes
            (stage / "frame_0.png").write_text("after")
        assert time.monotonic() - t0 > 0.2 and (dest / "frame_0.png").read_text() == "after"
    assert _leftovers(dest) == []


def test_a_killed_holders_lock_does_not_block_the_next_writer(tmp_path):
    dest = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from refocus_edge.runtime.publish import output_lock
        with output_lock({str(dest)!r}):
            os.kill(os.getpid(), signal.SIGKILL)
    """)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL and (tmp_path / ".out.lock").exists()  # stale file
    with publishing(dest) as stage:
        (stage / "frame_0.png").write_text("x")
    assert _leftovers(dest) == []


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    dest = tmp_path / "out"
    with output_lock(dest):
        with publishing(dest) as stage:  # `refocus run` locks first, then its writer publishes
            (stage / "frame_0.png").write_text("x")
        assert (tmp_path / ".out.lock").exists()
    assert not (tmp_path / ".out.lock").exists()


def test_recover_cleans_every_kind_of_leftover(tmp_path):
    dest = tmp_path / "out"
    _write_result(dest, "current")
    for name in (".out.staging-1-ab", ".out.partial", ".out.partial-77", ".out.ready-2-cd", ".out.old-3-ef"):
        _write_result(tmp_path / name, name)
    (tmp_path / ".other.staging-1").mkdir()  # another output's: not ours to touch
    with output_lock(dest):
        done = recover(dest)
    assert len(done) == 5 and _versions(dest) == {"current"} and _leftovers(dest) == []
    assert (tmp_path / ".other.staging-1").is_dir()
    # no destination: a complete (ready) result is rolled forward before an old one is restored
    _write_result(tmp_path / ".gone.old-1-aa", "old")
    _write_result(tmp_path / ".gone.ready-1-aa", "new")
    gone = tmp_path / "gone"
    with output_lock(gone):
        recover(gone)
    assert _versions(gone) == {"new"} and _leftovers(gone) == []
    _write_result(tmp_path / ".lost.old-1-aa", "old")
    lost = tmp_path / "lost"
    with output_lock(lost):
        recover(lost)
    assert _versions(lost) == {"old"}


def test_publish_artefacts_of_nested_outputs_are_not_carried_over(tmp_path):
    dest = tmp_path / "out"
    _write_result(dest, "old")
    (dest / ".edit.staging-9-zz").mkdir()  # `refocus edit` writing inside the run's folder
    (dest / ".edit.lock").write_text("123")
    with publishing(dest, carry_over=lambda name: name not in RESULT) as stage:
        _write_result(stage, "new")
    assert not (dest / ".edit.staging-9-zz").exists() and not (dest / ".edit.lock").exists()
    assert os.listdir(dest) and _versions(dest) == {"new"}


def test_a_cache_entry_waits_for_its_builder_and_a_read_only_cache_runs_unlocked(tmp_path, monkeypatch):
    from refocus_edge.runtime.publish import cache_entry_lock

    entry = tmp_path / "cache" / "engine.bin"
    with lock_held_elsewhere(entry, seconds=1.0):
        t0 = time.monotonic()
        with cache_entry_lock(entry):  # waits for the other builder instead of building twice
            waited = time.monotonic() - t0
    assert waited > 0.2 and not (tmp_path / "cache" / ".engine.bin.lock").exists()

    def read_only(*_a, **_k):
        raise PermissionError(13, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.warns(UserWarning, match="is not locked"):
        with cache_entry_lock(tmp_path / "ro" / "timings.json"):
            pass


def test_tensorrt_timing_cache_saves_merge_what_another_build_saved(tmp_path):
    """Two engine builds that overlap both load the timing cache, then save it: the second save merges
    the first's timings instead of replacing them (under the cache file's lock). TensorRT's own cache
    object is stood in for by a set with the same combine/serialize calls."""
    from refocus_edge.runtime.backends.backend_tensorrt import _save_timing_cache

    class Cache:
        def __init__(self, entries):
            self.entries = set(entries)

        def combine(self, other, ignore_mismatch):
            self.entries |= other.entries
            return True

        def serialize(self):
            return ",".join(sorted(self.entries)).encode()

    class Config:
        def __init__(self, entries):
            self.cache = Cache(entries)

        def get_timing_cache(self):
            return self.cache

        def create_timing_cache(self, data):
            return Cache(data.decode().split(",") if data else [])

    path = tmp_path / "trt" / "timing.cache"
    _save_timing_cache(Config(["unet:tactic1", "vae:tactic2"]), path)  # the first build, started from empty
    _save_timing_cache(Config(["decoder:tactic3"]), path)  # the second build, which also started from empty
    assert path.read_bytes() == b"decoder:tactic3,unet:tactic1,vae:tactic2"
    assert not list(path.parent.glob(".*lock*"))  # the lock file goes with its release
