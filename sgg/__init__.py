"""sgg: a Detectron2-style toolkit for image and video scene graph generation and the video models around it.

The names a user needs first are available here, imported on first use so that ``import sgg`` stays light::

    import sgg
    cfg = sgg.get_cfg()
    cfg.merge_from_file(sgg.model_zoo.get_config_file("quick/sttran_demo.yaml"))
    model = sgg.build_model(cfg)
    predictor = sgg.Predictor(cfg)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it (imported lazily, PEP 562)
_EXPORTS = {
    "get_cfg": "sgg.config",
    "build_model": "sgg.modeling",
    "Predictor": "sgg.engine",
    "DatasetCatalog": "sgg.data",
    "MetadataCatalog": "sgg.data",
    "model_zoo": "sgg.model_zoo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sgg' has no attribute '{name}'")
    imported = importlib.import_module(module)
    value = imported if module == f"sgg.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
