"""Dataset loaders, one file per dataset; ``builtin.py`` registers the catalog names."""

from . import builtin  # noqa: F401
