"""The configs shipped with sgg, found wherever sgg is installed (as detectron2's ``model_zoo``).

A wheel carries ``configs/`` as package data under ``sgg/model_zoo/configs``; a source checkout (``pip install -e``)
reads the repository's ``configs/``. Names are relative to that folder::

    from sgg.model_zoo import get_config_file, list_config_files
    get_config_file("quick/sttran_demo.yaml")   # -> absolute path of the packaged file
    list_config_files("quick")                  # -> ["quick/detr_demo.yaml", ...]

``tools/train_net.py`` / ``sgg-train`` accept such a name for ``--config-file`` when no file of that name exists
relative to the working directory.
"""

from __future__ import annotations

import glob
import os
from typing import List, Optional

__all__ = ["configs_root", "get_config_file", "list_config_files", "resolve_config_file"]

_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_CHECKOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def configs_root() -> str:
    """The folder holding sgg's configs: the packaged copy (a wheel) or the source checkout's ``configs/``."""
    for root in (_PACKAGED, _CHECKOUT):
        if os.path.isdir(root) and glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
            return root
    raise FileNotFoundError(f"No sgg configs found (looked in {_PACKAGED} and {_CHECKOUT}); the installation is "
                            "incomplete: reinstall sgg.")


def list_config_files(prefix: str = "") -> List[str]:
    """Names (relative, '/'-separated) of every shipped config under ``prefix`` (e.g. ``"quick"``), sorted."""
    root = configs_root()
    found = glob.glob(os.path.join(root, prefix, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, root).replace(os.sep, "/") for p in found)


def get_config_file(name: str) -> str:
    """Absolute path of the shipped config ``name`` (e.g. ``"quick/speaq_demo.yaml"``; a leading ``configs/`` is
    accepted); a clear error listing close names when there is none."""
    rel = name.replace("\\", "/")
    if rel.startswith("configs/"):
        rel = rel[len("configs/"):]
    path = os.path.join(configs_root(), *rel.split("/"))
    if not os.path.isfile(path):
        names = list_config_files()
        stem = os.path.basename(rel)
        close = [n for n in names if os.path.basename(n) == stem] or [n for n in names if stem.split(".")[0][:6] in n]
        hint = f" Did you mean: {', '.join(close[:5])}?" if close else f" Shipped configs: {', '.join(names)}."
        raise FileNotFoundError(f"sgg ships no config '{name}'.{hint}")
    return path


def resolve_config_file(path: str) -> Optional[str]:
    """``path`` itself when it is a file; else the shipped config of that name, if any; else None."""
    if not path or os.path.isfile(path):
        return path or None
    try:
        return get_config_file(path)
    except FileNotFoundError:
        return None
