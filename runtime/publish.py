"""Publishing a result folder all at once, one writer at a time.

Every command that writes a result folder (`refocus run`, `refocus edit`, `export`, `quantize`,
`distill`) renders into a hidden staging folder beside the destination and publishes it here.
What a user can observe, whatever instant a process is killed at:

* the destination holds the complete old result or the complete new one, never a mix;
* leftovers (staging folders, a swapped-out old result) are hidden siblings named after the
  destination, and the next writer of that destination removes them, or completes the swap
  they belong to, before it does anything else (`recover`).

The design:

1. **Lock.** A writer holds an advisory `flock` on `.<name>.lock` beside the destination for
   its whole run (`output_lock`): a second writer fails at once with the holder's pid, or
   waits when asked. The holder deletes the file when it is done; a killed holder's lock dies
   with its process and the stale file is reused by the next writer.
2. **Stage.** Everything is rendered into `.<name>.staging-<pid>-<token>` (same parent, so
   same filesystem). Entries of an existing destination that the new result does not
   replace (a user's own files, a `refocus edit` subfolder) are hard-linked into the staging
   folder ("carried over"), which copies no data and leaves the destination untouched.
3. **Commit.** The complete staging folder is renamed to `.<name>.ready-<pid>-<token>`: from
   this instant the new result is the one that must win.
4. **Swap.** A new destination is the ready folder renamed into place. An existing one is
   exchanged with it in one `renameat2(RENAME_EXCHANGE)` call (Linux, ext4/xfs/btrfs/tmpfs),
   so the destination path never stops holding a complete result; the old one, now under
   the ready name, is then deleted. Where the exchange is not supported, the old folder is
   renamed to `.<name>.old-<pid>-<token>` and the ready one into place; a kill between the
   two renames leaves no destination, and `recover` rolls the ready folder forward.

Recovery (under the lock, so no writer is active): staging folders are incomplete and
deleted; a ready folder is complete and becomes the destination if there is none, else it
is a leftover (before or after an exchange) and is deleted; an old folder is restored if
there is no destination and no ready folder, else deleted.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from refocus_edge.runtime.errors import RefocusError

STAGING, READY, OLD, LOCK = "staging", "ready", "old", "lock"
# Leftover names of earlier versions' writers (always incomplete): removed like staging folders.
_LEGACY_PARTIAL = ("partial",)

# Tests replace this to kill the process at a named step ("staged", "carried", "ready",
# "swapped", "cleaned") and then check what the next writer finds.
_fault: Callable[[str], None] = lambda step: None

_held: set[Path] = set()  # lock paths this process holds: a nested output_lock of one just yields


class OutputLockedError(RefocusError):
    """Another process is writing the same output folder."""


class OutputNotWritableError(RefocusError):
    """The output folder cannot be created or written."""


def _sibling(dest: Path, kind: str, tag: str = "") -> Path:
    return dest.parent / (f".{dest.name}.{kind}" + (f"-{tag}" if tag else ""))


def _siblings(dest: Path, kind: str) -> list[Path]:
    prefix = f".{dest.name}.{kind}"
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.iterdir() if p.name == prefix or p.name.startswith(prefix + "-"))


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


@contextmanager
def output_lock(dest: str | os.PathLike, wait: bool = False, poll_s: float = 0.2) -> Iterator[Path]:
    """Hold the writer's lock of `dest` (see the module docstring); re-entrant within a process."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_path = _sibling(dest, LOCK)
    if lock_path in _held:
        yield dest
        return
    fd = _acquire(lock_path, dest, wait, poll_s)
    _held.add(lock_path)
    try:
        yield dest
    finally:
        _held.discard(lock_path)
        # Unlinked while still held, so no file is left behind; a writer that opened the old
        # file meanwhile notices (inode check in _acquire) and starts over on a new one.
        try:
            os.unlink(lock_path)
        except OSError:
            pass
        os.close(fd)  # releases the flock


def _acquire(lock_path: Path, dest: Path, wait: bool, poll_s: float) -> int:
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not wait:
                raise OutputLockedError(f"{_holder(lock_path)} is writing this folder now; wait for it to "
                                        "finish, pick another output, or pass --wait", dest) from None
            time.sleep(poll_s)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed it after we opened it: lock the current file
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _existing_parent(dest: Path) -> Path:
    """The nearest existing folder above `dest`: where its staging folder (and `dest`) will live."""
    probe = dest.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable(dest: str | os.PathLike) -> None:
    """Before any work: the folder that will hold `dest`'s staging folder must be writable (a
    read-only disk found after minutes of computing loses those minutes)."""
    dest = Path(dest).absolute()
    probe = _existing_parent(dest)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"cannot write here: {probe} is read-only or not writable by this user; "
                                     "pick another output folder", dest)


def check_free_space(dest: str | os.PathLike, need_bytes: int) -> None:
    """Before the work: the disk that will hold `dest` has room for about `need_bytes` (the
    result is staged beside `dest` while the old one still exists, so both must fit)."""
    dest = Path(dest).absolute()
    probe = _existing_parent(dest)
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise OutputNotWritableError(f"not enough free space: the result needs about {need_bytes / 2 ** 20:.1f} MiB, "
                                     f"{free / 2 ** 20:.1f} MiB are free on {probe}; free some space or pick "
                                     "another output folder", dest)


def _is_publish_artefact(name: str) -> bool:
    """A lock, staging, ready or old sibling of a folder nested in the destination (`refocus
    edit`'s default output lives in the run's folder): never carried into a new result."""
    return name.startswith(".") and (name.endswith(f".{LOCK}") or
                                     any(f".{kind}" in name for kind in (STAGING, READY, OLD, *_LEGACY_PARTIAL)))


@contextmanager
def cache_entry_lock(path: str | os.PathLike) -> Iterator[None]:
    """One measurer or builder per machine-local cache entry (dispatch timings, TensorRT engines):
    a second process waits for the first, then finds the entry written. A cache folder that
    cannot hold a lock file (read-only home) runs unlocked: a cache must never stop a run."""
    with ExitStack() as stack:
        try:
            stack.enter_context(output_lock(path, wait=True))
        except OSError as exc:
            warnings.warn(f"cache entry {path} is not locked ({exc}); concurrent processes may measure twice")
        yield


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(dest: str | os.PathLike) -> list[str]:
    """Finish or undo what an interrupted writer of `dest` left; returns what was done (for logs).

    Call with the lock held (`output_lock`), before reading or writing `dest`."""
    dest = Path(dest).absolute()
    done = []
    for leftover in _siblings(dest, STAGING) + [p for k in _LEGACY_PARTIAL for p in _siblings(dest, k)]:
        _remove(leftover)
        done.append(f"removed the incomplete {leftover.name}")
    ready, old = _siblings(dest, READY), _siblings(dest, OLD)
    if not dest.exists() and ready:
        newest = max(ready, key=lambda p: p.stat().st_mtime)
        os.rename(newest, dest)
        ready.remove(newest)
        done.append(f"completed an interrupted publish ({newest.name})")
    elif not dest.exists() and old:
        newest = max(old, key=lambda p: p.stat().st_mtime)
        os.rename(newest, dest)
        old.remove(newest)
        done.append(f"restored the earlier result ({newest.name})")
    for leftover in ready + old:
        _remove(leftover)
        done.append(f"removed the leftover {leftover.name}")
    return done


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link `src` (a file, or a folder's files recursively) at `dst`: no data is copied."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
    else:
        os.link(src, dst)


def publish(staging: Path, dest: Path, carry_over: Callable[[str], bool] | None = None) -> None:
    """Publish the complete folder `staging` as `dest` (lock held, `recover` done)."""
    staging, dest = Path(staging), Path(dest).absolute()
    _fault("staged")
    if carry_over is not None and dest.is_dir():
        for entry in sorted(dest.iterdir()):
            if carry_over(entry.name) and not _is_publish_artefact(entry.name) \
                    and not (staging / entry.name).exists():
                _link_tree(entry, staging / entry.name)
    _fault("carried")
    tag = staging.name.split(f".{STAGING}-", 1)[-1]
    ready = _sibling(dest, READY, tag)
    os.rename(staging, ready)
    _fault("ready")
    if not dest.exists():
        os.rename(ready, dest)
        _fault("swapped")
    elif _exchange(ready, dest):
        _fault("swapped")
        _remove(ready)  # now the old result
    else:
        old = _sibling(dest, OLD, tag)
        os.rename(dest, old)
        _fault("swapped")
        os.rename(ready, dest)
        _remove(old)
    _fault("cleaned")


@contextmanager
def publishing(dest: str | os.PathLike, carry_over: Callable[[str], bool] | None = None,
               wait: bool = False) -> Iterator[Path]:
    """Lock `dest`, recover its leftovers, yield a new staging folder; publish it on success,
    remove it on any error (Ctrl-C included), leaving `dest` as it was."""
    dest = Path(dest).absolute()
    with output_lock(dest, wait=wait):
        recover(dest)
        staging = _sibling(dest, STAGING, f"{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(staging)  # umask permissions, not mkdtemp's 0700: it becomes the destination
        try:
            yield staging
            publish(staging, dest, carry_over)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
