"""One run per output: an exclusive lock on an output (or work directory) for the whole run.

``with output_lock("x.nxs", what="integrate"):`` holds ``fcntl.flock`` on the sibling ``.x.nxs.lock``,
which records the run holding it (PID, host, start time, command) as JSON. A second run on the same
output refuses at once (:class:`~pipeline.errors.OutputInUseError`, one line naming the other run).
A lock left by a killed run (flock released by the kernel, or the recorded PID gone on this host) is
taken over with a warning. The lock file is removed when the block ends. Locks are re-entrant within
one process (the CLI locks every output of a command; library code may lock the same path again).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import InputError, OutputInUseError
from pipeline.io.atomic import as_disk_full

__all__ = ["Lock", "OutputInUseError", "lock_path", "output_lock", "output_locks", "read_lock", "take_notes"]

log = logging.getLogger(__name__)

_notes: list[str] = []  # stale locks taken over, for the next run log (see take_notes)
_held: dict[str, Lock] = {}  # absolute output path -> lock held by this process
_guard = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` in the same directory."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}.lock"


def read_lock(path: str | os.PathLike) -> dict | None:
    """What the lock file of ``path`` records (``None`` if there is none or it is unreadable)."""
    try:
        info = json.loads(lock_path(path).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict | None) -> str:
    if not info:
        return "a run that has not written its details yet"
    return (
        f"{'diffuse ' + info['what'] if info.get('what') else 'a run'}, PID {info.get('pid')} on host "
        f"{info.get('host')}, started {info.get('started')}"
    )


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists but not ours, or not a PID: assume alive
    return True


def _gone_here(info: dict | None) -> bool:
    """The run recorded in ``info`` ran on this host and its process no longer exists."""
    return bool(info) and info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid"))


def _note(message: str) -> None:
    log.warning("%s", message)
    _notes.append(message)


def take_notes() -> list[str]:
    """The stale-lock notes since the last call (each new run log records them)."""
    with _guard:
        notes, _notes[:] = _notes[:], []
    return notes


def _remove_temporaries(path: Path, pid) -> None:
    """Remove the temporaries (``.NAME*.tmp-PID-*``, :func:`pipeline.io.atomic.temp_sibling`) that the
    dead run ``pid`` left beside its output ``path``."""
    from pipeline.io.atomic import discard

    for tmp in path.parent.glob(f".{glob.escape(path.name)}*.tmp-{int(pid)}-*"):
        _note(f"removing {tmp}, a temporary of the dead run (PID {pid})")
        discard(tmp)


class Lock:
    """A held lock: ``path`` is the output, ``file`` the ``.NAME.lock`` file, ``info`` what it records."""

    def __init__(self, path: Path, file: Path, fd: int, info: dict):
        self.path, self.file, self.fd, self.info = path, file, fd, info
        self.depth = 1

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(self.file).st_ino:
                os.unlink(self.file)  # still ours: remove it while holding the flock
        os.close(self.fd)


def _acquire(path: Path, what: str) -> Lock:
    file = lock_path(path)
    if not file.parent.is_dir():
        raise InputError(f"output directory {str(file.parent)!r} of {str(path)!r} does not exist")
    for _attempt in range(20):
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the lock file {str(file)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"cannot lock {str(file)!r}: {exc.strerror}") from None
            info = read_lock(path)
            if _gone_here(info):  # flock inherited by a leftover child of a dead run: break it
                _note(f"taking over the stale lock {file} of {_describe(info)} (PID {info['pid']} is gone)")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file)
                continue
            raise OutputInUseError(
                f"output {str(path)!r} is in use by another run: {_describe(info)} "
                f"(wait for it to finish, or choose another output; lock file {file})"
            ) from None
        try:
            if os.fstat(fd).st_ino != os.stat(file).st_ino:
                raise FileNotFoundError  # removed by its previous holder after we opened it: retry
        except FileNotFoundError:
            os.close(fd)
            continue
        with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as f:
            old = f.read()
        if old.strip():
            try:
                stale = json.loads(old)
            except ValueError:
                stale = None
            who = _describe(stale if isinstance(stale, dict) else None)
            _note(f"taking over the stale lock {file} left by {who} (that run ended without releasing it)")
            if isinstance(stale, dict) and _gone_here(stale):
                _remove_temporaries(path, stale["pid"])
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "what": what,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if what else None,
            "path": str(path),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:  # e.g. a full disk: no lock file is left behind
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(file)
            raise (as_disk_full(exc, path) or exc) from exc
        return Lock(path, file, fd, info)
    raise OutputInUseError(f"could not lock {str(path)!r}: its lock file {file} keeps changing")


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str = "") -> Iterator[Lock]:
    """Hold the exclusive lock of output ``path`` for the block (see the module docstring)."""
    key = os.path.abspath(path)
    with _guard:
        lock = _held.get(key)
        if lock is not None:
            lock.depth += 1
        else:
            lock = _held[key] = _acquire(Path(key), what)
    try:
        yield lock
    finally:
        with _guard:
            lock.depth -= 1
            if lock.depth == 0:
                del _held[key]
                lock.release()


@contextlib.contextmanager
def output_locks(paths: Iterable[str | os.PathLike | None], what: str = "") -> Iterator[list[Lock]]:
    """Hold the locks of several outputs (``None`` entries skipped): all of them, or none."""
    unique = sorted({os.path.abspath(p) for p in paths if p is not None})
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(output_lock(p, what)) for p in unique]
