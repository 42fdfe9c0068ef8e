"""Procedural demo-data generators that write each real dataset's exact on-disk format, and the registration of the
``demo_*`` dataset names (``builtin.py``), which read the generated files through the real datasets' loaders.

Every generator is published through :func:`~sgg.data.demo.generation.ensure_generated`.
"""

from . import builtin  # noqa: F401  (registers demo_vg_*, demo_synthetic_*, demo_ag_*, demo_tvsum*, demo_ssv2_*)
from .generation import ensure_generated

__all__ = ["ensure_generated"]
