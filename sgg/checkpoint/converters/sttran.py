"""Converters ``ag_detector`` and ``sttran``: the files released with yrcong/STTran -> sgg's STTran-family models
(feature source ``AGFasterRCNN``, meta-architecture ``STTran``).

``ag_detector`` — ``fasterRCNN/models/faster_rcnn_ag.pth`` (faster-rcnn.pytorch's ``{"model": state_dict, "epoch",
"session", "optimizer", "pooling_mode", "class_agnostic"}``). Keys ``RCNN_base.*`` (ResNet-101 conv1..layer3),
``RCNN_top.0.*`` (layer4), ``RCNN_rpn.{RPN_Conv,RPN_cls_score,RPN_bbox_pred}.*``, ``RCNN_cls_score.*`` (37 classes),
``RCNN_bbox_pred.*`` (4 x 37). sgg's :class:`~sgg.modeling.ag_faster_rcnn.AGFasterRCNN` keeps those names; in a
model it is the feature source, so every key gains the prefix ``features.``. BatchNorm ``num_batches_tracked``
counters are dropped (sgg's frozen BatchNorm has none; they only count training steps). The training state beside
the weights (optimizer, epoch, ...) is not a model tensor and is ignored.

``sttran`` — ``sttran_predcls.tar`` / ``sttran_sgcls.tar`` / ``sttran_sgdet.tar`` (``{"state_dict": ...}`` of
``lib/sttran.py``'s ``STTran``, which holds no detector weights). Renames (upstream -> sgg):

* ``union_func1`` -> ``relation.union_proj``; ``conv.{0,2,4,6}`` -> ``relation.mask_conv.{0,2,4,6}`` (same
  Sequential layout); ``subj_fc`` / ``obj_fc`` -> ``relation.subj_fc`` / ``relation.obj_fc``; ``vr_fc`` ->
  ``relation.union_fc``.
* ``obj_embed`` / ``obj_embed2`` (37 rows: background + 36 classes, indexed by 1-based labels) ->
  ``relation.subj_embed`` / ``relation.obj_embed`` without the background row (sgg's labels are 0-based, person 0;
  upstream never looks the background row up).
* ``glocal_transformer.local_attention.layers.i.*`` -> ``transformer.encoder.i.*`` (torch's
  ``TransformerEncoderLayer``: same names, post-norm, ReLU); ``glocal_transformer.global_attention.layers.i.``
  ``{multihead2, linear1, linear2, norm3}`` -> ``transformer.decoder.i.{attn, ffn.0, ffn.3, norm}``;
  ``glocal_transformer.position_embedding`` -> ``transformer.frame_embedding``.
* ``a_rel_compress`` / ``s_rel_compress`` / ``c_rel_compress`` -> ``attention_head`` / ``spatial_head`` /
  ``contacting_head``.
* ``object_classifier.obj_embed`` -> ``object_classifier.class_embed``; ``pos_embed.{0,1}`` (BatchNorm1d(4), Linear)
  -> the same indices; ``decoder_lin.{0,1,3}`` -> ``object_classifier.decoder.{0,1,3}``, the last Linear without its
  background row (upstream evaluates softmax over classes 1..36 only, which is the softmax of the remaining rows).
  Upstream builds the object classifier in every mode; sgg's PredCls model has none, so in a PredCls model these
  tensors are reported as unexpected by the load and ignored.

A converted STTran file carries no detector; pass ``--merge ag_detector faster_rcnn_ag.pth`` to
``tools/convert_checkpoint.py`` to write one file with both (what ``MODEL.WEIGHTS`` of configs/action_genome/
sttran_*.yaml loads), or give the detector by ``MODEL.AG_DETECTOR.WEIGHTS`` with ``MODEL.ALLOW_PARTIAL_WEIGHTS True``.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

import torch

from ..convert import CHECKPOINT_CONVERTERS, ConversionResult, rename_keys, require_prefix

__all__ = ["rename_sttran_key", "convert_ag_detector", "convert_sttran", "AG_DETECTOR_PREFIX"]

AG_DETECTOR_PREFIX = "features."  # where an STTran-family model keeps its AGFasterRCNN feature source

_AG_KEY = re.compile(r"(RCNN_base|RCNN_top|RCNN_rpn|RCNN_cls_score|RCNN_bbox_pred)\..+")

# (upstream pattern, sgg replacement); the first full match wins.
_STTRAN_RULES = [
    (r"union_func1\.(weight|bias)", r"relation.union_proj.\1"),
    (r"conv\.([0246])\.(.+)", r"relation.mask_conv.\1.\2"),
    (r"(subj_fc|obj_fc)\.(weight|bias)", r"relation.\1.\2"),
    (r"vr_fc\.(weight|bias)", r"relation.union_fc.\1"),
    (r"obj_embed\.weight", "relation.subj_embed.weight"),
    (r"obj_embed2\.weight", "relation.obj_embed.weight"),
    (r"glocal_transformer\.local_attention\.layers\.(\d+)\.(self_attn\..+|linear[12]\..+|norm[12]\..+)",
     r"transformer.encoder.\1.\2"),
    (r"glocal_transformer\.global_attention\.layers\.(\d+)\.multihead2\.(.+)", r"transformer.decoder.\1.attn.\2"),
    (r"glocal_transformer\.global_attention\.layers\.(\d+)\.linear1\.(.+)", r"transformer.decoder.\1.ffn.0.\2"),
    (r"glocal_transformer\.global_attention\.layers\.(\d+)\.linear2\.(.+)", r"transformer.decoder.\1.ffn.3.\2"),
    (r"glocal_transformer\.global_attention\.layers\.(\d+)\.norm3\.(.+)", r"transformer.decoder.\1.norm.\2"),
    (r"glocal_transformer\.position_embedding\.weight", "transformer.frame_embedding.weight"),
    (r"a_rel_compress\.(weight|bias)", r"attention_head.\1"),
    (r"s_rel_compress\.(weight|bias)", r"spatial_head.\1"),
    (r"c_rel_compress\.(weight|bias)", r"contacting_head.\1"),
    (r"object_classifier\.obj_embed\.weight", "object_classifier.class_embed.weight"),
    (r"object_classifier\.pos_embed\.([01])\.(.+)", r"object_classifier.pos_embed.\1.\2"),
    (r"object_classifier\.decoder_lin\.([013])\.(.+)", r"object_classifier.decoder.\1.\2"),
]
_COMPILED = [(re.compile(p), r) for p, r in _STTRAN_RULES]

# Tensors indexed by upstream's 1-based classes (row 0 = background) whose background row sgg drops.
_BACKGROUND_ROW = ("relation.subj_embed.weight", "relation.obj_embed.weight", "object_classifier.decoder.3.weight",
                   "object_classifier.decoder.3.bias")


def rename_sttran_key(key: str) -> Optional[str]:
    """sgg's name of an upstream ``lib/sttran.py`` STTran key, or None if it has none."""
    for pattern, repl in _COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(repl, key)
    return None


@CHECKPOINT_CONVERTERS.register("ag_detector")
def convert_ag_detector(state: Dict[str, torch.Tensor], *, source: str) -> ConversionResult:
    """``faster_rcnn_ag.pth`` -> ``features.RCNN_*`` of an STTran-family model with the AGFasterRCNN feature source
    (see the module docstring)."""
    require_prefix(state, ("RCNN_base.", "RCNN_top."), source=source,
                   expected="a faster-rcnn.pytorch ResNet detector (faster_rcnn_ag.pth)",
                   hint="an STTran relation model (sttran_*.tar) converts with --from sttran"
                   if any(k.startswith("glocal_transformer.") for k in state) else "")
    dropped = [k for k in state if k.endswith("num_batches_tracked")]
    result = rename_keys({k: v for k, v in state.items() if k not in dropped},
                         lambda k: AG_DETECTOR_PREFIX + k if _AG_KEY.fullmatch(k) else None)
    if dropped:
        result.notes.append(f"dropped {len(dropped)} BatchNorm num_batches_tracked counters (sgg's frozen BatchNorm "
                            "has none)")
    return result


@CHECKPOINT_CONVERTERS.register("sttran")
def convert_sttran(state: Dict[str, torch.Tensor], *, source: str) -> ConversionResult:
    """An upstream STTran relation model (``sttran_{predcls,sgcls,sgdet}.tar``) -> sgg's ``STTran`` keys (see the
    module docstring)."""
    require_prefix(state, ("glocal_transformer.", "a_rel_compress."), source=source,
                   expected="an STTran relation model (yrcong/STTran sttran_*.tar)",
                   hint="the Action Genome detector converts with --from ag_detector"
                   if any(k.startswith("RCNN_base.") for k in state) else "")
    result = rename_keys(state, rename_sttran_key)
    for key in _BACKGROUND_ROW:
        if key in result.state_dict:
            result.state_dict[key] = result.state_dict[key][1:].clone()
    result.notes.append("background row dropped from the class embeddings and the object classifier's output layer "
                        "(sgg's classes are 0-based, person 0)")
    if any(k.startswith("object_classifier.") for k in result.state_dict):
        result.notes.append("object_classifier.* is unused by a PredCls model (reported as unexpected there)")
    return result
