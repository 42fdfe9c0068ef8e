"""Evaluation: evaluator protocol, registry, protocol implementations."""

from .build import EVALUATOR_REGISTRY, build_evaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .testing import flatten_results_dict, print_csv_format, verify_results

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "DatasetEvaluator", "DatasetEvaluators", "inference_context",
           "inference_on_dataset", "flatten_results_dict", "print_csv_format", "verify_results"]
