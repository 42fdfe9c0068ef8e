"""Converters ``speaq`` and ``iterative_sg``: the released detectron2 checkpoints of mlvlab/SpeaQ and
ubc-vision/IterativeSG -> sgg's :class:`~sgg.modeling.meta_arch.speaq.SpeaQ` / ``IterativeSG``.

Both codebases build one model, ``IterativeRelationDetr``, whose state dict (``model`` entry of ``model_final.pth``) is
laid out as (``i`` a layer, ``S`` = ``subject`` | ``object`` | ``relation``):

* ``detr.backbone.0.backbone.{stem,res2..res5}.*`` — detectron2's ``build_resnet_backbone`` (ResNet-101,
  ``STRIDE_IN_1X1 False``, FrozenBN: ``weight``/``bias``/``running_mean``/``running_var``). That is torchvision's
  ResNet v1.5 (stride in the 3x3 conv) with other names, so it maps onto sgg's ``ResNet`` backbone
  (``MODEL.BACKBONE.NAME "ResNet"``, torchvision FrozenBatchNorm2d, the same eps 1e-5).
* ``detr.input_proj`` (1x1 conv 2048 -> d), ``detr.query_embed`` (subject queries), ``detr.object_query_embed``,
  ``detr.relation_query_embed`` (``MULTIPLY_QUERY`` x as many with SpeaQ's ``ONLY_PREDICATE_MULTIPLY``).
* ``detr.transformer.encoder.layers.i.{self_attn,linear1,linear2,norm1,norm2}`` — DETR's post-norm encoder.
* ``detr.transformer.decoder.S_layers.i.{self_attn,multihead_attn,linear1,linear2,norm1..3}``,
  ``decoder.subject_norm`` (shared by subjects and objects), ``decoder.relation_norm``,
  ``decoder.{object,relation}_pos_{attn,linear}.i`` (conditioning of the object / relation queries),
  ``decoder.S_graph_query_{attn,residual,norm}.i`` (the between-layer triplet attention).
* ``detr.transformer.{object_embed, object_bbox_coords.layers.k, relation_embed}`` — entity classes (+ no-object),
  the box MLP shared by the three streams, predicates (+ no-relation).
* ``criterion.*`` — the loss's class-weight buffers: training-only (sgg computes its own from the config and the
  training set's predicate frequencies), reported as unmapped.

SpeaQ's grouped queries and quality-aware multi-assignment are training-time matching rules (their config keys);
they add no parameters, so SpeaQ and IterativeSG checkpoints differ only in the number of relation queries.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import torch

from ..convert import CHECKPOINT_CONVERTERS, ConversionResult, WrongCheckpointKindError, rename_keys, require_prefix

__all__ = ["rename_speaq_key", "convert_speaq", "convert_iterative_sg"]

_STREAM = {"subject": "sub", "object": "obj", "relation": "rel"}
_BN = r"(weight|bias|running_mean|running_var)"

# (upstream pattern, sgg replacement) for the keys under "detr."; the first full match wins.
_RULES = [
    # detectron2 ResNet -> torchvision ResNet (sgg's ResNet backbone: stem = Sequential(conv1, bn1, relu, maxpool),
    # stages = [layer1..layer4]).
    (r"backbone\.0\.backbone\.stem\.conv1\.weight", r"backbone.stem.0.weight"),
    (rf"backbone\.0\.backbone\.stem\.conv1\.norm\.{_BN}", r"backbone.stem.1.\1"),
    (r"backbone\.0\.backbone\.res([2-5])\.(\d+)\.conv([1-3])\.weight",
     lambda m: f"backbone.stages.{int(m[1]) - 2}.{m[2]}.conv{m[3]}.weight"),
    (rf"backbone\.0\.backbone\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.{_BN}",
     lambda m: f"backbone.stages.{int(m[1]) - 2}.{m[2]}.bn{m[3]}.{m[4]}"),
    (r"backbone\.0\.backbone\.res([2-5])\.(\d+)\.shortcut\.weight",
     lambda m: f"backbone.stages.{int(m[1]) - 2}.{m[2]}.downsample.0.weight"),
    (rf"backbone\.0\.backbone\.res([2-5])\.(\d+)\.shortcut\.norm\.{_BN}",
     lambda m: f"backbone.stages.{int(m[1]) - 2}.{m[2]}.downsample.1.{m[3]}"),
    (r"input_proj\.(weight|bias)", r"input_proj.\1"),
    (r"query_embed\.weight", "sub_query.weight"),
    (r"object_query_embed\.weight", "obj_query.weight"),
    (r"relation_query_embed\.weight", "rel_query.weight"),
    # encoder: DETR's layer with the feed-forward pair under sgg's "ffn."
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)", r"encoder.layers.\1.self_attn.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.(linear[12])\.(weight|bias)", r"encoder.layers.\1.ffn.\2.\3"),
    (r"transformer\.encoder\.layers\.(\d+)\.(norm[12])\.(weight|bias)", r"encoder.layers.\1.\2.\3"),
    # the three decoders
    (r"transformer\.decoder\.(subject|object|relation)_layers\.(\d+)\.self_attn\.(.+)",
     lambda m: f"decoder.{_STREAM[m[1]]}_layers.{m[2]}.self_attn.{m[3]}"),
    (r"transformer\.decoder\.(subject|object|relation)_layers\.(\d+)\.multihead_attn\.(.+)",
     lambda m: f"decoder.{_STREAM[m[1]]}_layers.{m[2]}.cross_attn.{m[3]}"),
    (r"transformer\.decoder\.(subject|object|relation)_layers\.(\d+)\.(linear[12])\.(weight|bias)",
     lambda m: f"decoder.{_STREAM[m[1]]}_layers.{m[2]}.ffn.{m[3]}.{m[4]}"),
    (r"transformer\.decoder\.(subject|object|relation)_layers\.(\d+)\.(norm[123])\.(weight|bias)",
     lambda m: f"decoder.{_STREAM[m[1]]}_layers.{m[2]}.{m[3]}.{m[4]}"),
    (r"transformer\.decoder\.subject_norm\.(weight|bias)", r"decoder.entity_norm.\1"),
    (r"transformer\.decoder\.relation_norm\.(weight|bias)", r"decoder.rel_norm.\1"),
    (r"transformer\.decoder\.object_pos_attn\.(\d+)\.(.+)", r"decoder.obj_cond_attn.\1.\2"),
    (r"transformer\.decoder\.object_pos_linear\.(\d+)\.(weight|bias)", r"decoder.obj_cond_proj.\1.\2"),
    (r"transformer\.decoder\.relation_pos_attn\.(\d+)\.(.+)", r"decoder.rel_cond_attn.\1.\2"),
    (r"transformer\.decoder\.relation_pos_linear\.(\d+)\.(weight|bias)", r"decoder.rel_cond_proj.\1.\2"),
    (r"transformer\.decoder\.(subject|object|relation)_graph_query_attn\.(\d+)\.(.+)",
     lambda m: f"decoder.graph_attn.{_STREAM[m[1]]}.{m[2]}.{m[3]}"),
    (r"transformer\.decoder\.(subject|object|relation)_graph_query_residual\.(\d+)\.(weight|bias)",
     lambda m: f"decoder.graph_proj.{_STREAM[m[1]]}.{m[2]}.{m[3]}"),
    (r"transformer\.decoder\.(subject|object|relation)_graph_query_norm\.(\d+)\.(weight|bias)",
     lambda m: f"decoder.graph_norm.{_STREAM[m[1]]}.{m[2]}.{m[3]}"),
    # heads
    (r"transformer\.object_embed\.(weight|bias)", r"entity_class.\1"),
    (r"transformer\.object_bbox_coords\.layers\.(\d+)\.(weight|bias)", r"box_head.layers.\1.\2"),
    (r"transformer\.relation_embed\.(weight|bias)", r"relation_class.\1"),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]

_KIND_PREFIX = "detr.transformer.decoder.subject_layers."
_KIND = "an IterativeSG / SpeaQ checkpoint (detectron2 'IterativeRelationDetr', model_final.pth)"


def rename_speaq_key(key: str) -> Optional[str]:
    """sgg's name for one key of upstream's ``IterativeRelationDetr`` state dict, None if it has none (the loss's
    buffers ``criterion.*``, a stray DETR detection head ``detr.class_embed`` ...)."""
    if not key.startswith("detr."):
        return None
    rest = key[len("detr."):]
    for pattern, replacement in _COMPILED:
        m = pattern.fullmatch(rest)
        if m:
            return replacement(m) if callable(replacement) else m.expand(replacement)
    return None


def _layout(state: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """The config values a checkpoint implies (queries, layers, widths, classes, backbone depth)."""
    def count(pattern):
        return len({m[1] for k in state for m in [re.fullmatch(pattern, k)] if m})

    out = {"NUM_QUERIES": state["detr.query_embed.weight"].shape[0],
           "RELATION_QUERIES": state["detr.relation_query_embed.weight"].shape[0],
           "HIDDEN_DIM": state["detr.query_embed.weight"].shape[1],
           "ENC_LAYERS": count(r"detr\.transformer\.encoder\.layers\.(\d+)\..*"),
           "DEC_LAYERS": count(r"detr\.transformer\.decoder\.subject_layers\.(\d+)\..*")}
    ffn = state.get("detr.transformer.encoder.layers.0.linear1.weight")
    if ffn is not None:
        out["DIM_FEEDFORWARD"] = ffn.shape[0]
    head = state.get("detr.transformer.object_embed.weight")
    if head is not None:
        out["NUM_CLASSES"] = head.shape[0] - 1
    rel = state.get("detr.transformer.relation_embed.weight")
    if rel is not None:
        out["NUM_PREDICATES"] = rel.shape[0] - 1
    res4 = count(r"detr\.backbone\.0\.backbone\.res4\.(\d+)\..*")
    if res4:
        out["DEPTH"] = {6: 50, 23: 101, 36: 152}.get(res4, 0)
    return out


def _convert(state: Dict[str, torch.Tensor], source: str, *, speaq: bool) -> ConversionResult:
    require_prefix(state, _KIND_PREFIX, source=source, expected=_KIND,
                   hint="sgg checkpoints load with MODEL.WEIGHTS directly, without conversion")
    for key in ("detr.query_embed.weight", "detr.object_query_embed.weight", "detr.relation_query_embed.weight"):
        if key not in state:
            raise WrongCheckpointKindError(f"'{source}': '{key}' is missing: this is not a complete {_KIND}.")
    layout = _layout(state)
    q, qr = layout["NUM_QUERIES"], layout["RELATION_QUERIES"]
    if state["detr.object_query_embed.weight"].shape[0] != q or qr % q:
        raise WrongCheckpointKindError(
            f"'{source}': {q} subject, {state['detr.object_query_embed.weight'].shape[0]} object and {qr} relation "
            "queries: sgg's SpeaQ needs as many object as subject queries and a multiple of them as relation "
            "queries (SpeaQ's ONLY_PREDICATE_MULTIPLY True, as released).")
    multiply = qr // q
    if speaq and multiply == 1:
        raise WrongCheckpointKindError(f"'{source}' has as many relation as subject queries ({q}): it is an "
                                       "IterativeSG checkpoint (or SpeaQ's baseline); did you mean --from "
                                       "iterative_sg?")
    if not speaq and multiply != 1:
        raise WrongCheckpointKindError(f"'{source}' has {multiply} relation queries per subject query: it is a SpeaQ "
                                       "checkpoint (MULTIPLY_QUERY > 1); did you mean --from speaq?")
    result = rename_keys(state, rename_speaq_key)
    if layout.get("DEPTH") == 0:
        result.notes.append("the backbone's res4 has an unusual number of blocks; set MODEL.BACKBONE.DEPTH to match")
    overrides = [f"MODEL.DETR.NUM_QUERIES {q}", f"MODEL.DETR.MULTIPLY_QUERY {multiply}",
                 *(f"MODEL.DETR.{k} {layout[k]}" for k in ("HIDDEN_DIM", "DIM_FEEDFORWARD", "ENC_LAYERS", "DEC_LAYERS")
                   if k in layout)]
    if "NUM_CLASSES" in layout:
        overrides.append(f"MODEL.ROI_HEADS.NUM_CLASSES {layout['NUM_CLASSES']}")
    if "NUM_PREDICATES" in layout:
        overrides.append(f"MODEL.ROI_RELATION_HEAD.NUM_CLASSES {layout['NUM_PREDICATES']}")
    if layout.get("DEPTH"):
        overrides.append(f"MODEL.BACKBONE.NAME ResNet MODEL.BACKBONE.DEPTH {layout['DEPTH']}")
    result.notes.append("the checkpoint's layout (the config must match it): " + " ".join(overrides))
    training_only: List[str] = [k for k in result.unmapped if k.startswith("criterion.")]
    if training_only:
        result.notes.append(f"{len(training_only)} unmapped key(s) are the loss's class-weight buffers (criterion.*), "
                            "used only in training; sgg derives its own from the config and training data")
    return result


@CHECKPOINT_CONVERTERS.register("speaq")
def convert_speaq(state: Dict[str, torch.Tensor], *, source: str) -> ConversionResult:
    """mlvlab/SpeaQ ``IterativeRelationDetr`` (relation queries = ``MULTIPLY_QUERY`` x subject queries) -> sgg
    ``SpeaQ`` (``configs/Base-SpeaQ.yaml``); see the module docstring for the key layout."""
    return _convert(state, source, speaq=True)


@CHECKPOINT_CONVERTERS.register("iterative_sg")
def convert_iterative_sg(state: Dict[str, torch.Tensor], *, source: str) -> ConversionResult:
    """ubc-vision/IterativeSG ``IterativeRelationDetr`` (as many relation as subject queries) -> sgg
    ``IterativeSG`` (``configs/iterative_sg.yaml``)."""
    return _convert(state, source, speaq=False)
