"""Shared structures and box operations."""

from .boxes import *  # noqa: F401,F403
from .boxes import __all__  # noqa: F401
