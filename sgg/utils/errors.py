"""One error path for the whole toolkit: the project exception :class:`SGGError` and the CLI guard :func:`run_cli`.

Every failure a user can fix raises a subclass of :class:`SGGError` (``ConfigError``, ``CheckpointError``,
``VGFormatError``, ``ActionGenomeFormatError``, ``VideoError``, ``RegistryError``, ``OutputDirInUseError``,
``NonFiniteLossError`` ...) whose message names the file or config key, says what was expected and how to fix it.
The command-line tools wrap their entry point with :func:`run_cli` (or the :func:`main_guard` decorator), which prints
such an error as **one line** ``error: <message>`` on stderr and returns exit code 2 — whether it was raised in this
process, in a worker spawned by ``--num-gpus N`` (torch.multiprocessing) or in a DataLoader worker (both only hand
the parent the worker's traceback text; the message is recovered from it). Ctrl-C gives one line and exit code 130.

Tracebacks are written to ``OUTPUT_DIR/log.txt`` (the ``sgg`` logger's file handler) and printed only when the
environment variable ``SGG_DEBUG=1`` is set. Errors that are not user errors (bugs) keep Python's usual traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
from typing import Callable, Dict, Optional, Tuple, Type

__all__ = [
    "SGGError", "DataFormatError", "FileReadError", "MissingFileError", "InterruptedRun", "DEBUG_ENV",
    "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "debug_enabled", "one_line", "user_error_message", "run_cli",
    "main_guard", "USER_ERROR_TYPES",
]

logger = logging.getLogger(__name__)

DEBUG_ENV = "SGG_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class SGGError(Exception):
    """Base class of every user-facing sgg error; its message is one line naming the file/key and the fix.

    ``exit_code`` is what :func:`run_cli` returns for it (2 unless a subclass says otherwise). Subclasses are
    recorded by name so that an error raised in a worker process can be recognised from the worker's traceback text.
    """

    exit_code: int = EXIT_USER_ERROR
    _by_name: Dict[str, Type["SGGError"]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        SGGError._by_name[cls.__name__] = cls
        SGGError._by_name[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __str__(self) -> str:  # KeyError-derived subclasses would otherwise quote their message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


SGGError._by_name["SGGError"] = SGGError
SGGError._by_name[f"{__name__}.SGGError"] = SGGError


class DataFormatError(SGGError, ValueError):
    """A data file (annotation, image, h5, json) is missing, unreadable or not in the expected format."""


class FileReadError(SGGError, OSError):
    """A data file (image, video frame) cannot be read or decoded (truncated, corrupt)."""


class MissingFileError(FileReadError, FileNotFoundError):
    """A data file named by a dataset (image, video frame) does not exist."""


class InterruptedRun(SGGError):
    """The user stopped the run (Ctrl-C / SIGINT); the message says where the last checkpoint is."""

    exit_code = EXIT_INTERRUPTED


# Built-in exceptions whose messages sgg's code writes for users (they name the file/key); printed as one line too.
USER_ERROR_TYPES: Tuple[type, ...] = (SGGError, FileNotFoundError, PermissionError, IsADirectoryError,
                                      NotADirectoryError, ValueError, KeyError)
_BUILTIN_USER_ERRORS = {t.__name__: t for t in USER_ERROR_TYPES[1:]}

# The last line of a formatted traceback: "package.module.ClassName: message".
_INTERRUPTED = "interrupted (Ctrl-C)."
_EXC_LINE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*): (?P<msg>.*)$")


def debug_enabled() -> bool:
    """True when ``SGG_DEBUG`` is set to anything but ``""``/``0``/``false``: tracebacks are printed too."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def one_line(text: str) -> str:
    """``text`` with line breaks (and the indentation around them) folded into single spaces."""
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _class_for(name: str) -> Optional[type]:
    if name in SGGError._by_name:
        return SGGError._by_name[name]
    return _BUILTIN_USER_ERRORS.get(name)


def _message_from_traceback_text(text: str) -> Optional[Tuple[type, str]]:
    """The (class, message) of the last user error in a worker's formatted traceback, if it ends in one."""
    lines = text.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] == "KeyboardInterrupt" or lines[i].startswith("KeyboardInterrupt: "):
            return InterruptedRun, _INTERRUPTED
        m = _EXC_LINE.match(lines[i])
        if m is None:
            continue
        name = m.group("name")
        cls = _class_for(name) or _class_for(name.rsplit(".", 1)[-1])
        if cls is None:
            if name.endswith(("Error", "Exception", "Interrupt", "Exit", "Warning")):
                return None  # the worker died of something that is not a user error (a bug): keep its traceback
            continue  # a "word: text" line inside a multi-line message
        message = "\n".join([m.group("msg"), *lines[i + 1:]])
        if cls is KeyError and len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
            message = message[1:-1]
        return cls, one_line(message)
    return None


def _is_worker_wrapper(exc: BaseException) -> bool:
    text = str(exc)
    return "Traceback (most recent call last)" in text and (
        "DataLoader worker" in text or "terminated with the following error" in text
        or type(exc).__name__ == "ProcessRaisedException")


def user_error_message(exc: BaseException) -> Optional[Tuple[str, int]]:
    """``(one-line message, exit code)`` when ``exc`` is (or wraps, from a worker process) a user error, else None.

    Recognised: :class:`SGGError` and :data:`USER_ERROR_TYPES` raised here; the same raised in a DataLoader worker
    (re-raised by torch with the worker's traceback as message) or in a ``--num-gpus`` worker
    (``ProcessRaisedException``); ``KeyboardInterrupt``.
    """
    if isinstance(exc, KeyboardInterrupt):
        return _INTERRUPTED, EXIT_INTERRUPTED
    if _is_worker_wrapper(exc):
        found = _message_from_traceback_text(str(exc))
        if found is None:
            return None
        cls, message = found
        return message, getattr(cls, "exit_code", EXIT_USER_ERROR)
    if isinstance(exc, USER_ERROR_TYPES):
        text = str(exc)
        if isinstance(exc, KeyError) and not isinstance(exc, SGGError) and exc.args:
            text = str(exc.args[0])
        return one_line(text), getattr(exc, "exit_code", EXIT_USER_ERROR)
    return None


def run_cli(func: Callable, *args, **kwargs) -> int:
    """Call ``func(*args, **kwargs)`` and turn user errors into one ``error:`` line; returns the exit code.

    ``func`` returns an exit code (``None`` = 0). A user error (see :func:`user_error_message`) prints
    ``error: <message>`` on stderr and returns its exit code (2; 130 for Ctrl-C); its traceback goes to the ``sgg``
    logger at DEBUG level (``OUTPUT_DIR/log.txt`` once a run has set up logging) and, with ``SGG_DEBUG=1``, to stderr.
    Any other exception propagates with its traceback. ``SystemExit`` passes through.
    """
    try:
        code = func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - sorted below; anything unrecognised is re-raised
        if isinstance(exc, SystemExit):
            raise
        found = user_error_message(exc)
        if found is None:
            raise
        message, code = found
        logging.getLogger("sgg").debug("User error (exit code %d): %s", code, message, exc_info=True)
        if debug_enabled():
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code
    return 0 if code is None else int(code)


def main_guard(func: Callable) -> Callable:
    """Decorator form of :func:`run_cli`: ``@main_guard def main(argv=None) -> int`` returns the exit code."""

    @functools.wraps(func)
    def wrapped(*args, **kwargs) -> int:
        return run_cli(func, *args, **kwargs)

    return wrapped
