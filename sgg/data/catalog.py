"""``DatasetCatalog`` (name -> function returning list[dict]) and ``MetadataCatalog`` (name -> Metadata)."""

from __future__ import annotations

import difflib
import logging
import types
from collections import UserDict
from typing import Any, Callable, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]

logger = logging.getLogger(__name__)


class _DatasetCatalog(UserDict):
    """Global registry of datasets: ``register(name, func)`` where ``func()`` returns the dataset dicts.

    Catalog functions take no arguments, so dataset options that live in the config (``DATASETS.VG.*``,
    ``DATASETS.AG.*`` ...) reach them through *configurators*: ``register_configurator(fn)`` with ``fn(cfg)``
    storing the options its loader reads. ``configure(cfg)`` runs them all; the engine calls it in every worker
    before datasets are read (``tools/train_net.py`` setup, ``build_train_loader``, ``build_test_loader``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._configurators: List[Callable] = []

    def register_configurator(self, fn: Callable) -> Callable:
        """Add ``fn(cfg)`` to the functions run by :meth:`configure`; returns ``fn`` (usable as a decorator)."""
        if fn not in self._configurators:
            self._configurators.append(fn)
        return fn

    def configure(self, cfg) -> None:
        """Apply ``cfg``'s dataset options to every registered loader."""
        for fn in self._configurators:
            fn(cfg)

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable, got {type(func).__name__}.")
        if name in self:
            raise ValueError(f"Dataset '{name}' is already registered.")
        self[name] = func

    def get(self, name: str) -> List[dict]:
        """Call the registered function and return its list of dataset dicts."""
        try:
            func = self[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.keys()), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise KeyError(
                f"Dataset '{name}' is not registered.{hint} Registered: {', '.join(sorted(self.keys()))}."
            ) from None
        return func()

    def list(self) -> List[str]:
        """Sorted registered names."""
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        """Forget ``name`` (and keep its metadata)."""
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.list())})"


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Attributes of a dataset (class names, predicate names/frequencies, evaluator_type, ...).

    Attributes are write-once: setting an existing attribute to a different value raises, which catches two
    datasets fighting over the same name.
    """

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {', '.join(sorted(self.__dict__))}"
        )

    def __setattr__(self, key: str, val: Any) -> None:
        try:
            old = self.__dict__[key]
        except KeyError:
            super().__setattr__(key, val)
            return
        if old is not val and _differs(old, val):
            raise ValueError(f"Metadata '{key}' of dataset '{self.name}' cannot be changed from {old!r} to {val!r}.")

    def as_dict(self) -> dict:
        """A shallow copy of all attributes."""
        return dict(self.__dict__)

    def set(self, **kwargs) -> "Metadata":
        """Set several attributes; returns self."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """Attribute ``key`` or ``default``."""
        return self.__dict__.get(key, default)


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # numpy arrays etc.
        try:
            import numpy as np

            return not np.array_equal(np.asarray(a), np.asarray(b))
        except Exception:
            return True


class _MetadataCatalog(UserDict):
    """name -> :class:`Metadata`, created on first access."""

    def get(self, name: str) -> Metadata:
        """The metadata of ``name`` (created empty if absent)."""
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> List[str]:
        """Sorted names."""
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        """Forget ``name``'s metadata."""
        self.pop(name)


MetadataCatalog = _MetadataCatalog()
