"""Data: catalogs, dataset loaders, mappers, samplers and demo-data generators."""

from . import datasets  # noqa: F401  (registers built-in datasets)
from .build import (
    MAPPER_REGISTRY,
    build_mapper,
    build_test_loader,
    build_train_loader,
    get_dataset_dicts,
    get_multi_dataset_dicts,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .samplers import SAMPLER_REGISTRY

__all__ = ["MAPPER_REGISTRY", "SAMPLER_REGISTRY", "DatasetCatalog", "Metadata", "MetadataCatalog", "build_mapper",
           "build_test_loader", "build_train_loader", "get_dataset_dicts", "get_multi_dataset_dicts"]
