"""fvcore ``Registry`` whose lookup errors list what is registered (and the closest name)."""

from __future__ import annotations

import difflib
from typing import Any

from fvcore.common.registry import Registry as _FvRegistry

from .errors import SGGError

__all__ = ["Registry", "RegistryError", "all_registries"]

_ALL_REGISTRIES: dict = {}


class RegistryError(SGGError, KeyError):
    """An unknown name was requested from a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry(_FvRegistry):
    """A name -> object mapping filled with ``@REGISTRY.register()``; see fvcore's Registry."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        _ALL_REGISTRIES[name] = self

    def register(self, obj: Any = None) -> Any:
        """``@REG.register()`` (named by ``__name__``), ``@REG.register("name")`` or ``REG.register(obj)``."""
        if isinstance(obj, str):
            name = obj

            def deco(o: Any) -> Any:
                self._do_register(name, o)
                return o

            return deco
        return super().register(obj)

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; raise :class:`RegistryError` listing the options if absent."""
        ret = self._obj_map.get(name)
        if ret is None:
            names = sorted(self._obj_map)
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"No object named '{name}' in the {self._name} registry.{hint} "
                f"Registered: {', '.join(names) if names else '(none)'}."
            )
        return ret

    def names(self) -> list:
        """Sorted registered names."""
        return sorted(self._obj_map)


def all_registries() -> dict:
    """All registries created so far, by name (for ``tools/train_net.py --list``)."""
    return dict(_ALL_REGISTRIES)
