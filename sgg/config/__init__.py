"""Config system: ``get_cfg()``, ``CfgNode``, ``@configurable``."""

from .config import CfgNode, ConfigError, all_config_keys, configurable, import_user_modules
from .defaults import get_cfg

__all__ = ["CfgNode", "ConfigError", "all_config_keys", "configurable", "get_cfg", "import_user_modules"]
