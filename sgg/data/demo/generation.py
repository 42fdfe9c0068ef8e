"""Publishing generated demo data: :func:`ensure_generated` holds the "generate once, even when several worker
processes ask at the same time" logic for every demo generator."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Callable

__all__ = ["ensure_generated"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _file_lock(path: str):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename below still prevents half-written reads
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_generated(root: str, generate: Callable[[str], object], *, marker: str, description: str) -> str:
    """Make ``root`` hold a complete demo dataset; return its absolute path.

    ``root`` counts as complete when the file ``root/marker`` exists (put a version in the marker's name to
    regenerate after a format change). Otherwise, under a file lock beside ``root``, ``generate(tmp)`` writes into a
    temporary sibling folder, the marker is added, any incomplete or outdated copy is removed, and the folder is
    renamed into place: a concurrent reader waits for the lock or sees a complete dataset, never half of one.
    """
    root = os.path.abspath(root)
    marker_path = os.path.join(root, marker)
    if os.path.isfile(marker_path):
        return root
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    with _file_lock(root + ".lock"):
        if os.path.isfile(marker_path):
            return root
        logger.info("Generating the demo %s under %s (first use) ...", description, root)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        try:
            generate(tmp)
            with open(os.path.join(tmp, marker), "w") as f:
                f.write("complete\n")
            if os.path.exists(root):  # an interrupted attempt or an older format version
                shutil.rmtree(root)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root
