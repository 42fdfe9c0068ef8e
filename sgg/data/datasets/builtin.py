"""Registers every built-in dataset name (``vg_*``, ``ag_*``, ``tvsum``, ``demo_*`` ...) in the catalogs.

Data lives under ``$SGG_DATASETS`` (default ``./datasets``). Each dataset file exposes a ``register_*`` function;
this module calls them. Registration is cheap: files are only read when ``DatasetCatalog.get(name)`` is called.
"""

import os

__all__ = ["datasets_root"]


def datasets_root() -> str:
    """``$SGG_DATASETS`` or ``./datasets``."""
    return os.path.expanduser(os.environ.get("SGG_DATASETS", "datasets"))
