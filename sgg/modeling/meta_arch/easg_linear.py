"""EASG's linear baseline (Rodin et al., CVPR 2024; fpv-iplab/EASG ``run_easg.py``): three linear heads on features.

Per graph (one dict from :class:`~sgg.data.easg_mapper.EASGMapper`)::

    verb feature  f_v (D_v,)      (verb_features.pt; EASG: SlowFast 2304-d)
    object feature f_j (D_o,)     mean of object j's RoI features over all its rows and frames (roi_feats; 1024-d)
    verb logits     = fc_verb(f_v)                      (V,)
    object logits   = fc_objs(f_j)                      (N, C)
    relation logits = fc_rels([f_v | f_j])              (N, R)

Training returns ``{"loss_verb": CE, "loss_object": CE, "loss_relation": BCE-with-logits}`` (upstream trains all three
heads in every mode and reports all three modes from one model); evaluation returns per graph ``{"verb_scores" (V,)
softmax, "object_scores" (N, C) softmax, "relation_scores" (N, R) sigmoid}``, what ``easg_graph`` evaluates.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from sgg.config import configurable

from ..build import META_ARCH_REGISTRY

__all__ = ["EASGLinear", "graph_object_features"]

logger = logging.getLogger(__name__)


def graph_object_features(graph: dict, model: str) -> torch.Tensor:
    """``(N, D_o)``: each object's RoI features averaged over all its rows and frames (upstream's ``obj_feat``)."""
    feats = graph.get("roi_features")
    if feats is None or graph.get("verb_feature") is None:
        raise ValueError(f"{model} reads EASG's features: graph '{graph.get('graph_id')}' has no 'roi_features' / "
                         "'verb_feature'. Put verb_features.pt and roi_feats_{split}.pkl in the dataset root (or "
                         "DATASETS.EASG.FEATURES_DIR) and keep DATASETS.EASG.FEATURES auto/on.")
    return torch.stack([f.mean(0) for f in feats])


@META_ARCH_REGISTRY.register()
class EASGLinear(nn.Module):
    """Verb / object / relation linear heads on precomputed features (see the module docstring)."""

    @configurable
    def __init__(self, *, num_verbs: int, num_objects: int, num_relations: int, verb_dim: int, object_dim: int):
        """
        Args:
            num_verbs / num_objects / num_relations: class counts (EASG: 198 / 391 / 13).
            verb_dim / object_dim: feature widths (EASG: 2304 / 1024).
        """
        super().__init__()
        self.fc_verb = nn.Linear(verb_dim, num_verbs)
        self.fc_objs = nn.Linear(object_dim, num_objects)
        self.fc_rels = nn.Linear(verb_dim + object_dim, num_relations)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """``MODEL.EASG.{NUM_VERBS, NUM_OBJECTS, NUM_RELATIONS, VERB_FEATURE_DIM, ROI_FEATURE_DIM}``."""
        e = cfg.MODEL.EASG
        return {"num_verbs": e.NUM_VERBS, "num_objects": e.NUM_OBJECTS, "num_relations": e.NUM_RELATIONS,
                "verb_dim": e.VERB_FEATURE_DIM, "object_dim": e.ROI_FEATURE_DIM}

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return self.fc_verb.weight.device

    def _logits(self, graph: dict):
        obj = graph_object_features(graph, type(self).__name__).to(self.device)
        verb = graph["verb_feature"].to(self.device).reshape(1, -1)
        if verb.shape[1] != self.fc_verb.in_features or obj.shape[1] != self.fc_objs.in_features:
            raise ValueError(f"EASGLinear: features of graph '{graph.get('graph_id')}' are {verb.shape[1]}-d (verb) / "
                             f"{obj.shape[1]}-d (RoI), the model expects MODEL.EASG.VERB_FEATURE_DIM "
                             f"{self.fc_verb.in_features} / ROI_FEATURE_DIM {self.fc_objs.in_features}.")
        rel = self.fc_rels(torch.cat([verb.expand(len(obj), -1), obj], 1))
        return self.fc_verb(verb)[0], self.fc_objs(obj), rel

    def forward(self, batched_inputs: List[dict]):
        """Training: the three losses averaged over the graphs. Eval: one score dict per graph."""
        if self.training:
            losses: Dict[str, torch.Tensor] = {}
            for g in batched_inputs:
                verb, obj, rel = self._logits(g)
                parts = {"loss_verb": F.cross_entropy(verb[None], torch.tensor([g["verb"]], device=self.device)),
                         "loss_object": F.cross_entropy(obj, g["object_labels"].to(self.device)),
                         "loss_relation": F.binary_cross_entropy_with_logits(
                             rel, g["relation_targets"].to(self.device))}
                for k, v in parts.items():
                    losses[k] = losses.get(k, 0.0) + v / len(batched_inputs)
            return losses
        out = []
        for g in batched_inputs:
            verb, obj, rel = self._logits(g)
            out.append({"verb_scores": verb.softmax(0), "object_scores": obj.softmax(1),
                        "relation_scores": rel.sigmoid()})
        return out
