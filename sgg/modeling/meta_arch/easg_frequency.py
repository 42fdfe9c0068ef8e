"""A blind reference for EASG: training-set frequencies, no features, no pixels.

``EASGFrequencyBaseline`` counts on ``DATASETS.TRAIN`` (at build time) and scores every graph with what its mode gives:

* **edgecls** (GT verb v and object classes c): relation scores ``P(r | v, c)`` = the share of training objects of
  class c under verb v that have relation r (falling back to ``P(r | c)``, then ``P(r)`` for unseen combinations);
* **sgcls** (GT verb): object scores ``P(c | v)`` and relation scores ``P(r | v)``, the same for every object;
* **easgcls**: verb scores ``P(v)``, object scores ``P(c)``, relation scores ``P(r)``.

``MODEL.EASG.FREQUENCY_SMOOTHING`` is added to every count. Evaluated by ``easg_graph`` like the learned models, it
shows how much of their recall the label statistics alone explain. Nothing is trained (a zero loss lets the engine
write a checkpoint; ``--eval-only`` needs no weights).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from sgg.config import configurable
from sgg.data.build import get_dataset_dicts

from ..build import META_ARCH_REGISTRY

__all__ = ["EASGFrequencyBaseline", "easg_frequency_tables"]

logger = logging.getLogger(__name__)


def easg_frequency_tables(graphs: Sequence[dict], num_verbs: int, num_objects: int, num_relations: int):
    """Counts from EASG graph dicts: ``verb (V,)`` graphs per verb, ``objects (V, C)`` objects per (verb, class),
    ``relations (V, C, R)`` objects per (verb, class) having relation r."""
    verb = torch.zeros(num_verbs, dtype=torch.float64)
    objects = torch.zeros(num_verbs, num_objects, dtype=torch.float64)
    relations = torch.zeros(num_verbs, num_objects, num_relations, dtype=torch.float64)
    for g in graphs:
        v = int(g["verb"])
        verb[v] += 1
        for o in g["objects"]:
            objects[v, o["category_id"]] += 1
            relations[v, o["category_id"], list(o["relations"])] += 1
    return verb, objects, relations


@META_ARCH_REGISTRY.register()
class EASGFrequencyBaseline(nn.Module):
    """Frequency prior on EASG graphs (see the module docstring)."""

    requires_weights = False  # everything is counted from DATASETS.TRAIN at build time

    @configurable
    def __init__(self, *, mode: str, verb_counts: torch.Tensor, object_counts: torch.Tensor,
                 relation_counts: torch.Tensor, smoothing: float = 1e-3):
        """
        Args:
            mode: "edgecls", "sgcls" or "easgcls" (what the model may use; see the module docstring).
            verb_counts / object_counts / relation_counts: :func:`easg_frequency_tables`'s ``(V,)``, ``(V, C)``,
                ``(V, C, R)``.
            smoothing: added to every count.
        """
        super().__init__()
        if mode not in ("edgecls", "sgcls", "easgcls"):
            raise ValueError(f"EASGFrequencyBaseline: TEST.RELATION.MODE must be edgecls, sgcls or easgcls, got "
                             f"{mode!r}.")
        self.mode = mode
        s = float(smoothing)
        v, o, r = verb_counts.double(), object_counts.double(), relation_counts.double()
        # share of objects with relation r, conditioned on (verb, class), on class, on verb, and overall
        r_vc = (r + s) / (o[..., None] + 2 * s)
        r_c = (r.sum(0) + s) / (o.sum(0)[:, None] + 2 * s)
        seen_vc, seen_c = o > 0, o.sum(0) > 0
        r_all = (r.sum((0, 1)) + s) / (o.sum() + 2 * s)
        table = torch.where(seen_vc[..., None], r_vc, torch.where(seen_c[None, :, None], r_c[None], r_all))
        self.register_buffer("rel_given_verb_class", table.float())
        self.register_buffer("rel_given_verb", ((r.sum(1) + s) / (o.sum(1)[:, None] + 2 * s)).float())
        self.register_buffer("rel_prior", r_all.float())
        self.register_buffer("obj_given_verb", ((o + s) / (o + s).sum(1, keepdim=True)).float())
        self.register_buffer("obj_prior", ((o.sum(0) + s) / (o.sum(0) + s).sum()).float())
        self.register_buffer("verb_prior", ((v + s) / (v + s).sum()).float())
        self._dummy = nn.Parameter(torch.zeros(()))  # so that the engine's optimizer has a parameter

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Counts on ``DATASETS.TRAIN`` with ``MODEL.EASG.{NUM_VERBS, NUM_OBJECTS, NUM_RELATIONS}``."""
        if not cfg.DATASETS.TRAIN:
            raise ValueError("EASGFrequencyBaseline counts on DATASETS.TRAIN, which is empty.")
        e = cfg.MODEL.EASG
        verb, objects, relations = easg_frequency_tables(get_dataset_dicts(cfg.DATASETS.TRAIN), e.NUM_VERBS,
                                                         e.NUM_OBJECTS, e.NUM_RELATIONS)
        logger.info("EASGFrequencyBaseline (%s): counted %d graphs of %s.", cfg.TEST.RELATION.MODE, int(verb.sum()),
                    tuple(cfg.DATASETS.TRAIN))
        return {"mode": cfg.TEST.RELATION.MODE, "verb_counts": verb, "object_counts": objects,
                "relation_counts": relations, "smoothing": e.FREQUENCY_SMOOTHING}

    def forward(self, batched_inputs):
        """Training: a constant zero loss. Eval: ``{verb_scores, object_scores, relation_scores}`` per graph."""
        if self.training:
            return {"loss_none": self._dummy * 0.0}
        out = []
        for g in batched_inputs:
            v = int(g["verb"])
            labels = torch.as_tensor([o["category_id"] for o in g["objects"]], dtype=torch.int64)
            n = len(labels)
            if self.mode == "edgecls":
                rel = self.rel_given_verb_class[v, labels.to(self.verb_prior.device)]
                obj = nn.functional.one_hot(labels, self.obj_prior.numel()).float()
                verb = nn.functional.one_hot(torch.tensor(v), self.verb_prior.numel()).float()
            elif self.mode == "sgcls":
                rel = self.rel_given_verb[v].expand(n, -1)
                obj = self.obj_given_verb[v].expand(n, -1)
                verb = nn.functional.one_hot(torch.tensor(v), self.verb_prior.numel()).float()
            else:
                rel, obj, verb = self.rel_prior.expand(n, -1), self.obj_prior.expand(n, -1), self.verb_prior
            out.append({"verb_scores": verb, "object_scores": obj, "relation_scores": rel})
        return out
