"""OUTPUT_DIR safety: checked before anything is written, and held by one run at a time.

* :func:`check_output_dir` refuses, before any file is written, an OUTPUT_DIR that is a file (or lies under one), one
  that cannot be written, and — for a training run without ``--resume`` — one that already holds checkpoints
  (``last_checkpoint`` or ``model_*.pth``), which the new run would overwrite.
* :class:`OutputDirLock` is an exclusive lock file ``OUTPUT_DIR/run.lock`` (``fcntl.flock``; it records the holder's
  pid, host and start time). A second run into the same folder is refused naming the holder's pid. The kernel drops
  the lock when its process dies, so the lock of a killed run (``kill -9``, power loss) is stale: the next run takes
  it over and says so in the log. Released (and the file removed) when the run ends.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import socket
import time
from typing import Optional

from sgg.utils.errors import SGGError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid check below is the fallback
    fcntl = None

__all__ = ["pid_alive", "OutputDirError", "OutputDirInUseError", "OutputDirLockedError", "OutputDirLock", "LOCK_FILE",
           "check_output_dir", "existing_checkpoints", "acquire_output_dir_lock", "release_output_dir_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class OutputDirError(SGGError, OSError):
    """OUTPUT_DIR is a file, lies under a file, or cannot be written."""


class OutputDirInUseError(SGGError, RuntimeError):
    """OUTPUT_DIR already holds checkpoints of another run and --resume was not given."""


class OutputDirLockedError(OutputDirInUseError):
    """Another running process holds OUTPUT_DIR's lock file."""


def existing_checkpoints(output_dir: str) -> list:
    """Basenames of the checkpoint files a run would overwrite: ``last_checkpoint`` and ``model_*.pth``."""
    if not output_dir or not os.path.isdir(output_dir):
        return []
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(output_dir), "model_*.pth")))
    if os.path.isfile(os.path.join(output_dir, "last_checkpoint")):
        names.insert(0, "last_checkpoint")
    return names


def _last_checkpoint_name(output_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def check_output_dir(output_dir: str, *, resume: bool = False, eval_only: bool = False) -> None:
    """Refuse an unusable OUTPUT_DIR before anything is written (see the module docstring).

    Raises :class:`OutputDirError` (a file / under a file / not writable) or :class:`OutputDirInUseError` (a fresh
    training run into a folder holding checkpoints; ``--resume`` continues them, ``--eval-only`` does not train).
    """
    if not output_dir:
        return
    path = os.path.abspath(os.path.expanduser(output_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputDirError(f"OUTPUT_DIR '{output_dir}' is a file, not a folder. Set OUTPUT_DIR to a folder path "
                             "(it is created if missing); nothing was written.")
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise OutputDirError(f"OUTPUT_DIR '{output_dir}' cannot be created: '{existing}' is a file, not a folder. "
                             "Set OUTPUT_DIR to a path under a folder; nothing was written.")
    read_only_fs = bool(getattr(os, "ST_RDONLY", 0) and hasattr(os, "statvfs")
                        and os.statvfs(existing).f_flag & os.ST_RDONLY)
    if read_only_fs or not os.access(existing, os.W_OK | os.X_OK):
        what = "OUTPUT_DIR" if existing == path else f"the folder '{existing}' that would hold OUTPUT_DIR"
        raise OutputDirError(f"Cannot write to {what} '{output_dir}' (permission denied / read-only). Set OUTPUT_DIR "
                             "to a writable folder; nothing was written.")
    if eval_only:
        return
    found = existing_checkpoints(path)
    if not found:
        return
    last = _last_checkpoint_name(path)
    if resume and last is not None:
        return
    if last is not None:
        detail = f"last_checkpoint -> {last}"
    else:
        detail = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
    hint = "Pass --resume to continue that run" if last is not None else "Move those files away"
    raise OutputDirInUseError(f"OUTPUT_DIR '{output_dir}' already holds checkpoints ({detail}). {hint}, or set "
                              "OUTPUT_DIR to a new folder; nothing was overwritten.")


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _parse_holder(text: str) -> dict:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    try:
        fields["pid"] = int(fields.get("pid", ""))
    except ValueError:
        fields.pop("pid", None)
    return fields


class OutputDirLock:
    """Exclusive lock on ``OUTPUT_DIR/run.lock`` for the duration of a run (module docstring)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd: Optional[int] = None
        self.stale_pid: Optional[int] = None

    def describe_takeover(self) -> Optional[str]:
        """A sentence for the log when :meth:`acquire` took over a killed run's lock, else None."""
        if self.stale_pid is None:
            return None
        return (f"Took over the stale lock file '{self.path}' of pid {self.stale_pid} (that run is no longer running; "
                "it was killed or crashed, its checkpoints are as it left them).")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return _parse_holder(os.read(fd, 4096).decode("utf-8", "replace"))
        except OSError:
            return {}

    def _refuse(self, holder: dict) -> None:
        who = f"pid {holder['pid']}" if "pid" in holder else "another process"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        raise OutputDirLockedError(f"OUTPUT_DIR '{self.output_dir}' is in use by another run ({who}; lock file "
                                   f"'{self.path}'). Wait for that run to finish or stop it, or set OUTPUT_DIR to "
                                   "another folder; nothing was written.")

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise
        except OSError as e:
            raise OutputDirError(f"Cannot create the lock file '{self.path}' in OUTPUT_DIR ({e.strerror}). Set "
                                 "OUTPUT_DIR to a writable folder; nothing was written.") from e

    def _lock_fd(self) -> tuple:
        """Open and lock the file: ``(fd, previous holder)``; refuse when a live process holds it."""
        if fcntl is not None:
            while True:
                fd = self._open(os.O_RDWR | os.O_CREAT)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # BlockingIOError: held by a live process
                    holder = self._read(fd)
                    os.close(fd)
                    self._refuse(holder)
                try:  # the previous holder may have removed the file between our open() and flock()
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    return fd, self._read(fd)
                os.close(fd)
        while True:  # pragma: no cover - no fcntl (Windows): O_EXCL + "is the recorded pid alive?"
            try:
                return self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL), {}
            except FileExistsError:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    holder = _parse_holder(f.read())
                if "pid" in holder and pid_alive(holder["pid"]):
                    self._refuse(holder)
                os.remove(self.path)
                logger.warning("Removed the stale lock file '%s' of pid %s (not running).", self.path,
                               holder.get("pid", "?"))

    def acquire(self) -> "OutputDirLock":
        """Take the lock (or raise :class:`OutputDirLockedError` naming the holder); a stale lock is taken over and
        its pid kept in ``stale_pid`` (:meth:`describe_takeover` says it in words)."""
        if self._fd is not None:
            return self
        fd, previous = self._lock_fd()
        if previous.get("pid") not in (None, os.getpid()):
            self.stale_pid = previous["pid"]
        record = f"pid={os.getpid()} host={socket.gethostname()} started={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_ACTIVE_LOCK: Optional[OutputDirLock] = None


def acquire_output_dir_lock(output_dir: str) -> OutputDirLock:
    """Lock ``output_dir`` for this process's run; a lock this process took for an earlier run is released first."""
    global _ACTIVE_LOCK
    release_output_dir_lock()
    _ACTIVE_LOCK = OutputDirLock(output_dir).acquire()
    return _ACTIVE_LOCK


def release_output_dir_lock() -> None:
    """Release the lock taken by :func:`acquire_output_dir_lock` (called when a run ends; also at exit)."""
    global _ACTIVE_LOCK
    if _ACTIVE_LOCK is not None:
        _ACTIVE_LOCK.release()
        _ACTIVE_LOCK = None


atexit.register(release_output_dir_lock)
