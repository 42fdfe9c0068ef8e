"""DETR detector (SpeaQ's initialisation): dense auxiliary labels, losses, overfitting, and the x3 conversion."""

import pytest
import torch

from sgg.checkpoint import CheckpointError
from sgg.checkpoint.checkpointer import atomic_torch_save
from sgg.config import get_cfg
from sgg.modeling.backbone.small_cnn import SmallCNN
from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher
from sgg.modeling.meta_arch.detr import DETR, dense_entity_labels, detr_to_speaq_state_dict
from sgg.modeling.meta_arch.speaq import SpeaQ

from .test_speaq import fit, one_thread, scene  # noqa: F401  (fixture)


def tiny_detr(*, queries=4, hidden=32, aux=0.0, seed=0):
    torch.manual_seed(seed)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.OUT_CHANNELS = hidden
    return DETR(backbone=SmallCNN(cfg), num_classes=3, num_predicates=4, num_queries=queries, hidden_dim=hidden,
                nheads=2, dim_feedforward=64, enc_layers=1, dec_layers=2, dropout=0.0,
                encoder_aux_class_weight=aux)


def tiny_speaq(*, queries=4, hidden=32, multiply=1, detector_weights="", aux=0.0):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.OUT_CHANNELS = hidden
    return SpeaQ(backbone=SmallCNN(cfg), matcher=IterativeHungarianMatcher(), num_classes=3, num_predicates=4,
                 num_queries=queries, multiply_query=multiply, hidden_dim=hidden, nheads=2, dim_feedforward=64,
                 enc_layers=1, dec_layers=2, dropout=0.0, encoder_aux_class_weight=aux,
                 detector_weights=detector_weights)


def test_dense_labels_take_the_smallest_covering_box():
    x = scene([(0, 0, 32, 32), (8, 8, 24, 24)], [0, 1], [(1, 0, 0)], size=(32, 64))
    labels = dense_entity_labels([x], (2, 4), 16.0, background=3, device=torch.device("cpu"))
    # cell centres x = 8, 24, 40, 56 and y = 8, 24: (8, 8) lies in both boxes -> the smaller (class 1); boxes are
    # half-open, so (24, 24) is outside the small box [8, 24) and gets the big one's class
    assert labels.view(2, 4).tolist() == [[1, 0, 3, 3], [0, 0, 3, 3]]


def test_losses_are_finite_weighted_and_include_the_auxiliary_term():
    model = tiny_detr(aux=1.0).train()
    x = scene([(4, 6, 24, 26), (36, 30, 60, 58)], [0, 1], [(0, 1, 1)])
    losses = model([x])
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_encoder_ce"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    half = {**x, "loss_weight": 0.5}
    assert torch.allclose(sum(model([half]).values()), 0.5 * sum(losses.values()))
    empty = scene([], [], [], image_id=1)
    sum(model([empty]).values()).backward()  # no boxes at all: still a connected graph


def test_overfits_one_image(one_thread):  # noqa: F811
    x = scene([(4, 6, 24, 26), (36, 30, 60, 58), (40, 4, 58, 20)], [0, 1, 2], [(0, 1, 1)])
    model = fit(tiny_detr(queries=4), [x])
    with torch.no_grad():
        pred, = model([x])
    assert pred["rel_pairs"].shape == (0, 2) and pred["rel_scores"].shape == (0, 4)
    top = pred["boxes"][:3]
    for box, label in zip(x["gt_boxes"], x["gt_classes"]):
        iou = torch.tensor([float(_iou(box, b)) for b in top])
        k = int(iou.argmax())
        assert iou[k] > 0.5 and pred["labels"][k] == label, (box, pred)


def _iou(a, b):
    lt = torch.maximum(a[:2], b[:2])
    rb = torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)


def test_speaq_starts_from_the_detector_with_its_decoder_replicated(tmp_path):
    detr = tiny_detr(queries=3, aux=1.0, seed=1)
    path = str(tmp_path / "detr.pth")
    atomic_torch_save({"model": detr.state_dict()}, path)
    torch.manual_seed(5)
    speaq = tiny_speaq(queries=3, multiply=2, detector_weights=path)
    d, s = detr.state_dict(), speaq.state_dict()
    for stream in ("sub", "obj", "rel"):
        assert torch.equal(s[f"decoder.{stream}_layers.1.cross_attn.in_proj_weight"],
                           d["decoder.1.cross_attn.in_proj_weight"])
    assert torch.equal(s["decoder.entity_norm.weight"], d["decoder_norm.weight"])
    assert torch.equal(s["backbone.body.0.0.weight"], d["backbone.body.0.0.weight"])
    assert torch.equal(s["encoder.layers.0.self_attn.in_proj_weight"], d["encoder.layers.0.self_attn.in_proj_weight"])
    assert torch.equal(s["sub_query.weight"], d["query.weight"])
    assert torch.equal(s["rel_query.weight"], d["query.weight"].repeat_interleave(2, 0))
    assert torch.equal(s["entity_class.weight"], d["entity_class.weight"])
    assert "encoder_class.weight" not in s  # SpeaQ without the auxiliary loss drops the detector's aux head
    # the conditioning projections keep their zero initialisation: at start the decoders are the detector's
    assert torch.count_nonzero(s["decoder.obj_cond_proj.0.weight"]) == 0


def test_detector_weights_errors_name_the_file_and_the_mismatch(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*Check MODEL.DETR.DETECTOR_WEIGHTS"):
        tiny_speaq(detector_weights=str(tmp_path / "missing.pth"))
    truncated = tmp_path / "truncated.pth"
    atomic_torch_save({"model": tiny_detr().state_dict()}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*Point MODEL.DETR.DETECTOR_WEIGHTS at an intact"):
        tiny_speaq(detector_weights=str(truncated))
    speaq_ckpt = str(tmp_path / "speaq.pth")
    atomic_torch_save({"model": tiny_speaq().state_dict()}, speaq_ckpt)
    with pytest.raises(CheckpointError, match="not a checkpoint of sgg's DETR"):
        tiny_speaq(detector_weights=speaq_ckpt)
    wide = str(tmp_path / "wide.pth")
    atomic_torch_save({"model": tiny_detr(queries=4, hidden=32).state_dict()}, wide)
    with pytest.raises(ValueError, match="has 4 queries but this SpeaQ has NUM_QUERIES = 3; set .*NUM_QUERIES 4"):
        tiny_speaq(queries=3, detector_weights=wide)
    with pytest.raises(CheckpointError, match="shape"):
        cfg_detr = tiny_detr(queries=4, hidden=16)
        atomic_torch_save({"model": cfg_detr.state_dict()}, wide)
        tiny_speaq(queries=4, hidden=32, detector_weights=wide)


def test_conversion_skips_nothing_it_should_carry():
    state = tiny_detr(queries=2, aux=1.0).state_dict()
    out = detr_to_speaq_state_dict(state, multiply_query=1, num_relation_queries=2)
    carried = {k for k in state if not k.startswith(("decoder.", "decoder_norm.", "query."))}
    assert carried <= set(out)
