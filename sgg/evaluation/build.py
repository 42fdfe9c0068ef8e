"""``EVALUATOR_REGISTRY`` and ``build_evaluator``."""

from __future__ import annotations

from sgg.data.catalog import MetadataCatalog
from sgg.utils.registry import Registry

from .evaluator import DatasetEvaluators

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """Dataset evaluators, built as ``cls(cfg, dataset_name, output_dir)``."""


def build_evaluator(cfg, dataset_name: str, output_dir: str):
    """Evaluators for ``dataset_name``: ``TEST.EVALUATORS`` if set, else the metadata's ``evaluator_type``.

    Returns a :class:`~sgg.evaluation.evaluator.DatasetEvaluators` (possibly wrapping one evaluator).
    """
    names = list(cfg.TEST.EVALUATORS)
    if not names:
        etype = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if etype is None:
            raise ValueError(
                f"No evaluator for dataset '{dataset_name}': set TEST.EVALUATORS or the dataset's metadata "
                f"evaluator_type. Registered evaluators: {', '.join(EVALUATOR_REGISTRY.names())}."
            )
        names = [etype] if isinstance(etype, str) else list(etype)
    return DatasetEvaluators([EVALUATOR_REGISTRY.get(n)(cfg, dataset_name, output_dir) for n in names])
