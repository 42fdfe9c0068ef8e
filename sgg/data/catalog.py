"""``DatasetCatalog`` (name -> function returning list[dict]) and ``MetadataCatalog`` (name -> Metadata).

Also where datasets live (:func:`datasets_root`) and the dataset *options* taken from the config
(``DATASETS.VG.*``, ``DATASETS.AG.*`` ...): catalog functions take no arguments, so each dataset family registers an
option group (defaults + how to read them from a config), the run's setup fixes them once with
:meth:`DatasetCatalog.configure`, and the loaders read them with :meth:`DatasetCatalog.options`.
"""

from __future__ import annotations

import difflib
import logging
import os
import types
from collections import UserDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from sgg.utils.errors import SGGError

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "DatasetOptionsError", "datasets_root"]

logger = logging.getLogger(__name__)


def datasets_root() -> str:
    """Where datasets live: ``$SGG_DATASETS`` or ``./datasets`` (read on every call, so the variable may change)."""
    return os.path.expanduser(os.environ.get("SGG_DATASETS", "datasets"))


class DatasetOptionsError(SGGError, ValueError):
    """The dataset options in effect are not the ones the config asks for (setup was skipped or another config
    configured them)."""


@dataclass(frozen=True)
class _OptionGroup:
    defaults: Mapping[str, Any]
    from_config: Callable[[Any], Dict[str, Any]]
    validate: Optional[Callable[[Dict[str, Any]], None]]
    keys: str  # the config keys it reads, for messages


class _DatasetCatalog(UserDict):
    """Global registry of datasets: ``register(name, func)`` where ``func()`` returns the dataset dicts.

    Dataset options: ``register_options(group, defaults=..., from_config=...)`` declares a family's options;
    ``configure(cfg)`` fixes every group from the run's config (``sgg.engine.setup`` does it once per process, in
    every worker); loaders read ``options(group)``; the data loaders call ``check_configured(cfg)`` so that a config
    whose options were never applied fails with a clear message instead of reading differently filtered data.
    """

    def __init__(self) -> None:
        super().__init__()
        self._option_groups: Dict[str, _OptionGroup] = {}
        self._options: Dict[str, Mapping[str, Any]] = {}
        self._dataset_option_group: Dict[str, str] = {}

    # ----------------------------------------------------------------------------------------------- options
    def register_options(self, group: str, *, defaults: Mapping[str, Any], from_config: Callable[[Any], dict],
                         validate: Optional[Callable[[dict], None]] = None, keys: str = "") -> None:
        """Declare option group ``group``: ``from_config(cfg)`` returns its values (a dict with ``defaults``' keys),
        ``validate(values)`` raises ``ValueError`` for bad ones; ``keys`` names the config keys for messages."""
        self._option_groups[group] = _OptionGroup(MappingProxyType(dict(defaults)), from_config, validate,
                                                  keys or group)
        self._options.setdefault(group, MappingProxyType(dict(defaults)))

    def options(self, group: str) -> Mapping[str, Any]:
        """The options of ``group`` in effect (read-only)."""
        return self._options[self._known_group(group)]

    def set_options(self, group: str, **values) -> Mapping[str, Any]:
        """Set ``group``'s options to its defaults updated with ``values`` (for library use and tests); returns them.
        ``set_options(group)`` restores the defaults."""
        spec = self._option_groups[self._known_group(group)]
        unknown = set(values) - set(spec.defaults)
        if unknown:
            raise KeyError(f"Unknown option(s) {sorted(unknown)} of dataset option group '{group}'; valid: "
                           f"{sorted(spec.defaults)}.")
        options = dict(spec.defaults, **values)
        if spec.validate is not None:
            spec.validate(options)
        self._options[group] = MappingProxyType(options)
        return self._options[group]

    def reset_options(self) -> None:
        """Every option group back to its defaults."""
        for group in self._option_groups:
            self.set_options(group)

    def configure(self, cfg) -> None:
        """Fix every option group from ``cfg`` (validated). Called once per process by the run's setup."""
        for group in self._option_groups:
            self.set_options(group, **self._option_groups[group].from_config(cfg))

    def check_configured(self, cfg, dataset_names: Optional[Sequence[str]] = None) -> None:
        """Raise :class:`DatasetOptionsError` when the options in effect differ from those ``cfg`` asks for, for the
        option groups that ``dataset_names`` read (every group when None)."""
        if dataset_names is None:
            groups = list(self._option_groups)
        else:
            groups = list(dict.fromkeys(self._dataset_option_group[n] for n in dataset_names
                                        if n in self._dataset_option_group))
        for group in groups:
            spec = self._option_groups[group]
            wanted = dict(spec.defaults, **spec.from_config(cfg))
            current = dict(self._options[group])
            if wanted != current:
                diff = ", ".join(f"{k}: {current.get(k)!r} in effect, {wanted.get(k)!r} in the config"
                                 for k in sorted(wanted) if wanted.get(k) != current.get(k))
                raise DatasetOptionsError(
                    f"The dataset options of this config ({spec.keys}) were not applied ({diff}). Build runs with "
                    "sgg.engine.setup(args), or call DatasetCatalog.configure(cfg) before building data loaders."
                )

    def option_group_of(self, name: str) -> Optional[str]:
        """The option group dataset ``name`` reads (None when it has none)."""
        return self._dataset_option_group.get(name)

    def _known_group(self, group: str) -> str:
        if group not in self._option_groups:
            raise KeyError(f"No dataset option group '{group}'; registered: {sorted(self._option_groups)}.")
        return group

    def register(self, name: str, func: Callable[[], List[dict]], *, option_group: Optional[str] = None) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``; ``option_group``: the dataset
        option group its loader reads (see :meth:`register_options`)."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable, got {type(func).__name__}.")
        if name in self:
            raise ValueError(f"Dataset '{name}' is already registered.")
        if option_group is not None:
            self._dataset_option_group[name] = self._known_group(option_group)
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
        self._dataset_option_group.pop(name, None)

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
