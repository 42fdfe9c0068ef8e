"""The detectron2 bridge: lazy import, and detectron2 configs built from (or merged into) sgg config sections.

detectron2 is optional. Nothing in sgg imports it at import time; :func:`import_detectron2` loads it when a config
asks for a detectron2 part and, when it is absent, raises :class:`Detectron2NotInstalled` (a :class:`ConfigError`,
so the CLIs print one ``error:`` line saying how to install it).

A *detectron2 section* of an sgg config (``MODEL.BACKBONE.D2``, ``MODEL.VIDEO_DETECTOR.D2``) holds two sgg keys,
``CONFIG_FILE`` (a detectron2 YAML; ``detectron2://<path>`` names a config shipped in detectron2's model zoo) and
``OUT_FEATURE``, and, beside them, detectron2 keys written as in a detectron2 config (``MODEL.RESNETS.DEPTH``,
``INPUT.FORMAT``). :func:`build_detectron2_cfg` turns a section into a detectron2 ``CfgNode``; precedence, lowest
first: detectron2's defaults, the sgg keys mapped by the caller (e.g. ``MODEL.BACKBONE.DEPTH``), ``CONFIG_FILE``
(its ``_BASE_`` chain resolved by detectron2), the inline keys. :func:`merge_detectron2_config` copies what a
detectron2 YAML says about the model (``MODEL.*``, ``INPUT.FORMAT``) into a section. Keys detectron2 does not know
fail with one line naming the key and the closest valid one, from the YAML and from the inline keys alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from fvcore.common.config import CfgNode as _FvCfgNode

from .config import CfgNode, ConfigError, _closest_key_hint, all_config_keys

__all__ = ["INSTALL_HINT", "Detectron2NotInstalled", "detectron2_available", "import_detectron2",
           "SECTION_KEYS", "build_detectron2_cfg", "merge_detectron2_config", "load_detectron2_yaml",
           "resolve_detectron2_config_file"]

logger = logging.getLogger(__name__)

INSTALL_HINT = ("install it with: pip install 'git+https://github.com/facebookresearch/detectron2.git' "
                "(after torch; a prebuilt wheel: pip install detectron2-*.whl; see docs/detectron2.md)")

# sgg's own keys in a detectron2 section; every other key is a detectron2 key.
SECTION_KEYS = ("CONFIG_FILE", "OUT_FEATURE")

# The parts of a detectron2 YAML that describe a model (what merge_detectron2_config keeps).
_MODEL_SECTIONS = ("MODEL",)
_MODEL_KEYS = ("INPUT.FORMAT",)

_ZOO_PREFIX = "detectron2://"


class Detectron2NotInstalled(ConfigError, ImportError):
    """A config asked for a detectron2 part, and detectron2 cannot be imported."""


def detectron2_available() -> bool:
    """Whether ``import detectron2`` would find the package (nothing is imported)."""
    try:
        return importlib.util.find_spec("detectron2") is not None
    except (ImportError, ValueError):  # a finder refusing it, or a broken entry in sys.modules
        return False


def import_detectron2(feature: str, module: str = "detectron2"):
    """Import and return ``module`` (detectron2 or one of its submodules) for ``feature``.

    Raises :class:`Detectron2NotInstalled` with the install instructions when detectron2 is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name != "detectron2" and not e.name.startswith("detectron2."):
            raise  # detectron2 is there but one of its own dependencies is broken: show that error as it is
        raise Detectron2NotInstalled(f"{feature} needs detectron2, which is not installed; {INSTALL_HINT}.") from e


def resolve_detectron2_config_file(path: str, key: str) -> str:
    """A local detectron2 YAML path; ``detectron2://X`` = the file ``X`` of the model-zoo configs shipped inside the
    detectron2 package (``detectron2/model_zoo/configs/X``; nothing is downloaded)."""
    if path.startswith(_ZOO_PREFIX):
        package = import_detectron2(f"{key} '{path}'")
        name = path[len(_ZOO_PREFIX):]
        resolved = os.path.join(os.path.dirname(package.__file__), "model_zoo", "configs", name)
        if not os.path.isfile(resolved):
            raise ConfigError(f"{key}: detectron2's model zoo has no config '{name}' (looked for '{resolved}').")
        return resolved
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: detectron2 config file not found: '{path}'.")
    return path


def _flatten(d: dict, prefix: str = "") -> List[Tuple[str, Any]]:
    items = []
    for k, v in d.items():
        if isinstance(v, dict):
            items.extend(_flatten(v, f"{prefix}{k}."))
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _check_keys(d2_cfg, items: Iterable[Tuple[str, Any]], where: str, shown_prefix: str = "",
                also_known: Sequence[str] = ()) -> None:
    """Refuse keys that detectron2's config (``d2_cfg``) does not have, naming the closest one."""
    known = None
    for key, _ in items:
        node = d2_cfg
        for part in key.split("."):
            if isinstance(node, _FvCfgNode) and part in node:
                node = node[part]
                continue
            if isinstance(node, _FvCfgNode) and node.is_new_allowed():
                break
            known = known if known is not None else list(also_known) + all_config_keys(d2_cfg)
            hint = _closest_key_hint(key, known)
            hint = hint.replace("'", f"'{shown_prefix}", 1) if hint and shown_prefix else hint
            raise ConfigError(f"Unknown detectron2 config key '{shown_prefix}{key}' ({where}).{hint}")


def load_detectron2_yaml(path: str, key: str = "detectron2 config") -> dict:
    """A detectron2 YAML as a plain dict, its ``_BASE_`` chain resolved by detectron2, every key checked against
    detectron2's defaults (:class:`ConfigError` naming the first unknown one)."""
    config = import_detectron2(f"{key} '{path}'", "detectron2.config")
    path = resolve_detectron2_config_file(path, key)
    loaded = config.CfgNode.load_yaml_with_base(path, allow_unsafe=False)
    _check_keys(config.get_cfg(), _flatten(loaded), f"from detectron2 config '{path}'")
    return loaded


def _inline_items(section: _FvCfgNode) -> List[Tuple[str, Any]]:
    return _flatten({k: v for k, v in section.items() if k not in SECTION_KEYS})


def build_detectron2_cfg(section: _FvCfgNode, *, name: str, mapped: Sequence[Tuple[str, Any]] = ()):
    """A detectron2 ``CfgNode`` from the sgg detectron2 section ``section`` (named ``name``, e.g.
    ``"MODEL.BACKBONE.D2"``); ``mapped`` are ``(detectron2 key, value)`` pairs from sgg keys, applied before
    ``CONFIG_FILE`` (see the module docstring for the precedence)."""
    config = import_detectron2(f"{name}", "detectron2.config")
    d2_cfg = config.get_cfg()
    for key, value in mapped:
        _set(d2_cfg, key, value, f"mapped from an sgg key into {name}")
    path = section.get("CONFIG_FILE", "")
    if path:
        load_detectron2_yaml(path, f"{name}.CONFIG_FILE")  # checks every key with a clear message first
        d2_cfg.merge_from_file(resolve_detectron2_config_file(path, f"{name}.CONFIG_FILE"))
    items = _inline_items(section)
    _check_keys(d2_cfg, items, f"in {name}; known keys: {', '.join(SECTION_KEYS)} and detectron2's",
                shown_prefix=f"{name}.", also_known=SECTION_KEYS)
    for key, value in items:
        _set(d2_cfg, key, value, f"{name}.{key}")
    return d2_cfg


def _set(d2_cfg, key: str, value: Any, where: str) -> None:
    try:
        d2_cfg.merge_from_list([key, value])
    except ValueError as e:  # yacs: "Type mismatch (<class 'int'> vs. <class 'str'>) ..."
        raise ConfigError(f"detectron2 config key '{key}' ({where}): {e}") from None
    except AssertionError as e:  # yacs: "Non-existent key: ..."
        raise ConfigError(f"Unknown detectron2 config key '{key}' ({where}): {e}") from None


def merge_detectron2_config(cfg: CfgNode, path: str, section: str = "MODEL.BACKBONE.D2") -> List[str]:
    """Merge the detectron2 YAML ``path`` (``_BASE_`` chain resolved, keys checked) into the detectron2 section
    ``section`` of the sgg config ``cfg``: its ``MODEL.*`` keys and ``INPUT.FORMAT`` become inline keys of the
    section (later merges win). Returns the top-level sections of the YAML that were left out (``SOLVER``, ...),
    which describe detectron2's training, not a model."""
    loaded = load_detectron2_yaml(path, section)
    node = cfg
    for part in section.split("."):
        if part not in node:
            raise ConfigError(f"merge_detectron2_config: the sgg config has no section '{section}'.")
        node = node[part]
    kept: Dict[str, Any] = {}
    dropped = set()
    for key, value in _flatten(loaded):
        if key.split(".")[0] in _MODEL_SECTIONS or key in _MODEL_KEYS:
            kept[key] = value
        elif key != "VERSION":
            dropped.add(key.split(".")[0])
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, value in kept.items():
        cfg.merge_from_list([f"{section}.{key}", value])
    if was_frozen:
        cfg.freeze()
    if dropped:
        logger.info("Merged the model keys of '%s' into %s; left out its %s keys (training settings).", path,
                    section, ", ".join(sorted(dropped)))
    return sorted(dropped)

