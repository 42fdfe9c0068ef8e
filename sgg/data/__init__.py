"""Data: catalogs, dataset loaders, mappers, samplers and demo-data generators.

Importing it registers the built-in datasets (``datasets/builtin.py``), the demo datasets (``demo/builtin.py``) and
the mappers.
"""

from . import (  # noqa: F401  (register the mappers)
    dataset_mapper,
    datasets,  # noqa: F401  (registers the real datasets)
    demo,  # noqa: F401  (registers the demo datasets)
    easg_mapper,
    keyframe_mapper,
    t2v_mapper,
    video_mapper,
)
from .build import (
    MAPPER_REGISTRY,
    build_mapper,
    build_test_loader,
    build_train_loader,
    get_dataset_dicts,
    get_multi_dataset_dicts,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog, datasets_root
from .samplers import SAMPLER_REGISTRY

__all__ = ["MAPPER_REGISTRY", "SAMPLER_REGISTRY", "DatasetCatalog", "Metadata", "MetadataCatalog", "build_mapper",
           "build_test_loader", "build_train_loader", "get_dataset_dicts", "get_multi_dataset_dicts",
           "datasets_root"]
