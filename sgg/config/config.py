"""Config objects: an fvcore/yacs ``CfgNode`` with clear errors, ``get_cfg`` and ``@configurable``.

Differences from plain yacs that users notice:

* an unknown key fails with :class:`ConfigError` naming the key, the file it came from and the closest valid key;
* a value of the wrong type (``SOLVER.MAX_ITER abc``) fails naming the key, the expected and the given type;
* a missing file fails naming the path;
* Python config files are refused unless ``allow_unsafe=True`` is passed explicitly.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
from ast import literal_eval
from typing import Any, Callable, Iterable, List, Optional, Tuple

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from sgg.utils.errors import SGGError, one_line

__all__ = ["CfgNode", "ConfigError", "configurable", "all_config_keys", "import_user_modules"]

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"


class ConfigError(SGGError, ValueError):
    """A user-facing configuration problem (unknown key, wrong type, missing file)."""


def all_config_keys(cfg: "CfgNode", prefix: str = "") -> List[str]:
    """Return every leaf key of ``cfg`` as a dotted name (e.g. ``"SOLVER.BASE_LR"``)."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        if isinstance(value, _FvCfgNode):
            keys.append(full)
            keys.extend(all_config_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _closest_key_hint(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:
        # Also try matching only the last component (e.g. "SOLVER.BASE_LRR" vs "BASE_LR").
        leaf = key.split(".")[-1]
        by_leaf = {c.split(".")[-1]: c for c in candidates}
        close_leaf = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[c] for c in close_leaf]
    return f" Did you mean '{close[0]}'?" if close else ""


def _coerce_value(key: str, new: Any, old: Any) -> Any:
    """Coerce ``new`` to the type of the default ``old`` where yacs allows it; raise ConfigError otherwise."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
        raise ConfigError(
            f"Config key '{key}' expects type {type(old).__name__} (current value {old!r}), got {new!r} "
            f"({type(new).__name__})."
        )
    if isinstance(new, type(old)):
        return new
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    if isinstance(old, str) and isinstance(new, str):
        return new
    raise ConfigError(
        f"Config key '{key}' expects type {type(old).__name__} (current value {old!r}), "
        f"got {new!r} ({type(new).__name__})."
    )


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` with ``_BASE_`` inheritance, strict keys and user-facing errors.

    New keys may only be added by code (``cfg.NEW = ...`` while unfrozen, or ``set_new_allowed``); files and
    command-line overrides can only change keys that exist in the default tree.
    """

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False, _chain: Tuple[str, ...] = ()) -> dict:
        """Load a YAML file, resolving ``_BASE_`` (relative to the file) recursively.

        Errors name the file: missing, not YAML (or binary), not a mapping, a ``_BASE_`` that is not a path string,
        and a ``_BASE_`` chain that comes back to a file already in it (a cycle).
        """
        if not os.path.isfile(filename):
            where = f" (the _BASE_ of '{_chain[-1]}')" if _chain else ""
            raise ConfigError(f"Config file not found: '{filename}'{where}. Check the path passed to --config-file"
                              f"{' and its _BASE_ entries' if _chain else ''}.")
        real = os.path.realpath(filename)
        if real in _chain:
            cycle = " -> ".join([*_chain[_chain.index(real):], real])
            raise ConfigError(f"Config file '{filename}' inherits from itself through _BASE_ ({cycle}). Remove the "
                              "_BASE_ entry that closes the cycle.")
        if filename.endswith(".py"):
            if not allow_unsafe:
                raise ConfigError(
                    f"Refusing to execute Python config '{filename}': Python configs run arbitrary code. "
                    "Pass allow_unsafe=True to merge_from_file() if you trust this file."
                )
            return _load_python_config(filename)
        try:
            with open(filename, "r", encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except UnicodeDecodeError as e:
            raise ConfigError(f"Config file '{filename}' is not a YAML text file (it is not UTF-8 text: {e.reason} at "
                              f"byte {e.start}). Pass the .yaml config, not a binary file.") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file '{filename}' is not valid YAML: {one_line(e)}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"Config file '{filename}' must hold a mapping at top level, got {type(loaded).__name__}."
            )
        if BASE_KEY in loaded:
            base_file = loaded.pop(BASE_KEY)
            if not isinstance(base_file, str) or not base_file.strip():
                raise ConfigError(f"'{BASE_KEY}' in config file '{filename}' must be the path of another YAML config "
                                  f"(a string), got {base_file!r} ({type(base_file).__name__}).")
            if not base_file.startswith(("/", "~")):
                base_file = os.path.join(os.path.dirname(filename), base_file)
            base = cls.load_yaml_with_base(os.path.expanduser(base_file), allow_unsafe=allow_unsafe,
                                           _chain=(*_chain, real))
            _merge_dicts(loaded, base)
            return base
        return loaded

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML (or, with ``allow_unsafe``, Python) config file into this config."""
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        self._merge_dict(loaded, source=cfg_filename)

    def merge_from_other_cfg(self, cfg_other: "CfgNode") -> None:
        """Merge another config (e.g. a saved ``config.yaml`` loaded as CfgNode) into this one."""
        self._merge_dict(dict(cfg_other), source="<other config>")

    def merge_from_list(self, cfg_list: List[str]) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (the CLI's trailing overrides) with type checks."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must come in KEY VALUE pairs; got an odd number of items: {list(cfg_list)}"
            )
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            value = self._decode_cfg_value(raw) if isinstance(raw, str) else raw
            self._set_existing(full_key, value, source="command line")

    # ------------------------------------------------------------------ internals
    def _set_existing(self, full_key: str, value: Any, source: str) -> None:
        if self.is_frozen():
            raise ConfigError(f"Cannot set '{full_key}': config is frozen.")
        node = self
        parts = full_key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, _FvCfgNode) or part not in node:
                if isinstance(node, _FvCfgNode) and node.is_new_allowed():
                    node[part] = value if i == len(parts) - 1 else CfgNode(new_allowed=True)
                    node = node[part]
                    continue
                hint = _closest_key_hint(full_key, all_config_keys(self))
                raise ConfigError(f"Unknown config key '{full_key}' (from {source}).{hint}")
            if i == len(parts) - 1:
                old = node[part]
                if isinstance(old, _FvCfgNode):
                    if not isinstance(value, dict):
                        raise ConfigError(f"Config key '{full_key}' is a section; give a mapping, got {value!r}.")
                    for k, v in value.items():
                        self._set_existing(f"{full_key}.{k}", v, source)
                    return
                node[part] = _coerce_value(full_key, self._normalize(value), old)
            else:
                node = node[part]

    def _merge_dict(self, d: dict, source: str, prefix: str = "") -> None:
        for k, v in d.items():
            full = f"{prefix}{k}"
            if isinstance(v, dict):
                self._check_section(full, source)
                self._merge_dict(v, source, full + ".")
            else:
                # yacs semantics: strings in YAML are literal-eval'ed too ("(1, 2)" -> tuple, "1e-4" -> float).
                self._set_existing(full, self._decode_cfg_value(v) if isinstance(v, str) else v, source)

    def _check_section(self, full_key: str, source: str) -> None:
        node = self
        for part in full_key.split("."):
            if not isinstance(node, _FvCfgNode) or part not in node:
                if isinstance(node, _FvCfgNode) and node.is_new_allowed():
                    node[part] = CfgNode(new_allowed=True)
                    node = node[part]
                    continue
                hint = _closest_key_hint(full_key, all_config_keys(self))
                raise ConfigError(f"Unknown config key '{full_key}' (from {source}).{hint}")
            node = node[part]

    @staticmethod
    def _normalize(value: Any) -> Any:
        if isinstance(value, list):
            return [CfgNode._normalize(v) for v in value]
        return value

    @classmethod
    def _decode_cfg_value(cls, value: str) -> Any:
        try:
            return literal_eval(value)
        except (ValueError, SyntaxError):
            return value

    def dump(self, **kwargs) -> str:
        """Return the config as YAML text."""
        return super().dump(**kwargs)


def _load_python_config(filename: str) -> dict:
    """Execute a Python config file and return its ``cfg`` variable (a CfgNode or dict) as a plain dict."""
    import runpy

    namespace = runpy.run_path(filename)
    if "cfg" not in namespace:
        raise ConfigError(f"Python config '{filename}' must define a variable named 'cfg'.")
    cfg = namespace["cfg"]
    if not isinstance(cfg, dict):
        raise ConfigError(f"'cfg' in '{filename}' must be a CfgNode or dict, got {type(cfg).__name__}.")
    return _to_plain_dict(cfg)


def _to_plain_dict(node: dict) -> dict:
    return {k: _to_plain_dict(v) if isinstance(v, dict) else v for k, v in node.items()}


def _merge_dicts(src: dict, dst: dict) -> None:
    """Recursively merge ``src`` into ``dst`` (``src`` wins), used for ``_BASE_``."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_dicts(v, dst[k])
        else:
            dst[k] = v


def import_user_modules(cfg: "CfgNode") -> None:
    """Import every module named in ``cfg.IMPORTS`` (user code registering its parts); clear error if one fails."""
    import importlib

    for name in cfg.get("IMPORTS", []):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"IMPORTS names module '{name}', which cannot be imported: {e}. "
                              "Check the module path and that its folder is on PYTHONPATH.") from e


# ---------------------------------------------------------------------------- @configurable
def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """Let a class ``__init__`` (or a function) be called either with a cfg or with plain keyword arguments.

    On a class::

        class Head(nn.Module):
            @configurable
            def __init__(self, *, dim: int, num_classes: int): ...

            @classmethod
            def from_config(cls, cfg):
                return {"dim": cfg.MODEL.DIM, "num_classes": cfg.MODEL.NUM_CLASSES}

        Head(cfg)                         # built from config
        Head(cfg, num_classes=3)          # config, one value overridden
        Head(dim=8, num_classes=3)        # plain keyword arguments

    On a function, pass ``from_config=`` mapping a cfg to keyword arguments.
    """
    if init_func is not None:
        if not (inspect.isfunction(init_func) and init_func.__name__ == "__init__"):
            raise TypeError("@configurable without arguments decorates a class __init__; "
                            "on functions use @configurable(from_config=...).")

        @functools.wraps(init_func)
        def wrapped_init(self, *args, **kwargs):
            from_config_fn = getattr(type(self), "from_config", None)
            if from_config_fn is None:
                raise AttributeError(f"{type(self).__name__} uses @configurable but has no from_config classmethod.")
            if _called_with_cfg(*args, **kwargs):
                explicit = _get_args_from_config(from_config_fn, *args, **kwargs)
                init_func(self, **explicit)
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable

    def decorator(func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if _called_with_cfg(*args, **kwargs):
                return func(**_get_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return decorator


def _called_with_cfg(*args, **kwargs) -> bool:
    if args and isinstance(args[0], _FvCfgNode):
        return True
    return isinstance(kwargs.get("cfg", None), _FvCfgNode)


def _get_args_from_config(from_config_fn: Callable, *args, **kwargs) -> dict:
    signature = inspect.signature(from_config_fn)
    params = list(signature.parameters)
    if not params or params[0] != "cfg":
        raise TypeError(f"{from_config_fn.__qualname__} must take 'cfg' as its first argument.")
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    if has_var_kw:
        return from_config_fn(*args, **kwargs)
    supported = set(params)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in supported}
    ret = from_config_fn(*args, **kwargs)
    ret.update(extra)  # explicit keyword arguments override the config's values
    return ret
