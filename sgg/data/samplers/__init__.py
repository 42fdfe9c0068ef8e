"""Samplers. Every training sampler is an infinite, seeded, per-rank **batch** sampler.

Contract for classes in ``SAMPLER_REGISTRY`` used as ``DATALOADER.SAMPLER_TRAIN``:

* built as ``cls(cfg, dataset_dicts=..., batch_size=<per-rank>, rank=..., world_size=..., seed=..., start_batch=...)``
  (``@configurable``; ``from_config(cls, cfg, dataset_dicts, *, batch_size, rank, world_size, seed, start_batch)``);
* ``iter()`` yields lists of indices into ``dataset_dicts`` forever; the stream is a pure function of
  (seed, rank, world_size, config), and starts after the first ``start_batch`` batches — that is how resume works;
* ``state_dict()`` returns something JSON-able describing its identity (name, seed, ...), stored in checkpoints.
"""

from sgg.utils.registry import Registry

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = "Data samplers (``DATALOADER.SAMPLER_TRAIN`` / ``SAMPLER_TEST``)."

from .curriculum import CurriculumSampler  # noqa: E402
from .distributed_sampler import InferenceSampler, TrainingSampler  # noqa: E402
from .multi_dataset import MultiDatasetDynamicSampler  # noqa: E402
from .repeat_factor import RepeatFactorTrainingSampler  # noqa: E402

__all__ = ["SAMPLER_REGISTRY", "TrainingSampler", "InferenceSampler", "RepeatFactorTrainingSampler",
           "MultiDatasetDynamicSampler", "CurriculumSampler"]
