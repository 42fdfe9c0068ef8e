"""Evaluation: evaluator protocol, registry, protocol implementations."""

from . import easg_graph, keyframe, video_generation, video_scene_graph  # noqa: F401  (register their evaluators)
from .box_ap import evaluate_box_ap
from .build import EVALUATOR_REGISTRY, build_evaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .scene_graph import SceneGraphEvaluator, evaluate_scene_graphs  # registers "scene_graph"
from .testing import flatten_results_dict, print_csv_format, verify_results

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "DatasetEvaluator", "DatasetEvaluators", "inference_context",
           "inference_on_dataset", "flatten_results_dict", "print_csv_format", "verify_results",
           "evaluate_box_ap", "SceneGraphEvaluator", "evaluate_scene_graphs"]
