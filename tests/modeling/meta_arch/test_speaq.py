"""SpeaQ / IterativeSG meta-architecture: targets, losses with per-sample weights, inference, overfitting, configs,
and the start from a DETR detector (decoder replicated x3)."""

import os

import pytest
import torch
import torchvision

from sgg.checkpoint import CheckpointError
from sgg.checkpoint.checkpointer import atomic_torch_save
from sgg.config import get_cfg
from sgg.data.catalog import MetadataCatalog
from sgg.evaluation.scene_graph import evaluate_scene_graphs
from sgg.modeling import build_model
from sgg.modeling.matchers.speaq import SpeaQMatcher
from sgg.modeling.meta_arch.speaq import (
    TRIPLET_RULES,
    build_relation_targets,
    detr_to_speaq_state_dict,
    relation_boxes_from_pairs,
    triplet_inference,
)
from sgg.structures.boxes import box_cxcywh_to_xyxy
from tests.modeling.matchers.test_speaq_matcher import VG_FREQ  # real VG150 counts
from tests.modeling.set_prediction_tiny import fit, scene, tiny_detr, tiny_speaq

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")


def test_relation_boxes_span_centres():
    sub = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    obj = torch.tensor([[20.0, 4.0, 40.0, 8.0]])
    assert relation_boxes_from_pairs(sub, obj).tolist() == [[5.0, 5.0, 30.0, 6.0]]
    assert relation_boxes_from_pairs(obj, sub).tolist() == [[5.0, 5.0, 30.0, 6.0]]


def test_build_relation_targets_normalises_and_validates():
    x = scene([(0, 0, 32, 16), (32, 16, 64, 64)], [0, 2], [(0, 1, 3)], size=(64, 128))
    t, = build_relation_targets([x], 3, 4, torch.device("cpu"))
    assert t["sub_labels"].tolist() == [0] and t["obj_labels"].tolist() == [2] and t["rel_labels"].tolist() == [3]
    assert torch.allclose(box_cxcywh_to_xyxy(t["sub_boxes"]), torch.tensor([[0, 0, 32 / 128, 16 / 64]]))
    assert torch.allclose(box_cxcywh_to_xyxy(t["rel_boxes"]), torch.tensor([[16 / 128, 8 / 64, 48 / 128, 40 / 64]]))
    bad = dict(x, gt_relations=torch.tensor([[0, 5, 1]]))
    with pytest.raises(ValueError, match="index outside"):
        build_relation_targets([bad], 3, 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="gt_classes"):
        build_relation_targets([dict(x, gt_classes=torch.tensor([0, 7]))], 3, 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="NaN"):
        build_relation_targets([dict(x, gt_boxes=torch.full((2, 4), float("nan")))], 3, 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="loss_weight"):
        build_relation_targets([dict(x, loss_weight=float("nan"))], 3, 4, torch.device("cpu"))


def _batch(w1=1.0, w2=1.0):
    a = scene([(4, 4, 20, 20), (30, 30, 60, 50)], [0, 1], [(0, 1, 2)], weight=w1, image_id=1)
    b = scene([(10, 40, 30, 60), (40, 5, 60, 25), (5, 5, 15, 15)], [2, 1, 0], [(0, 1, 0), (2, 0, 1)], weight=w2,
              image_id=2)
    return [a, b]


def test_per_sample_weights_scale_every_term_linearly():
    model = tiny_speaq()
    model.train()
    with torch.no_grad():
        both = model(_batch(1.0, 1.0))
        only_a = model(_batch(1.0, 0.0))
        only_b = model(_batch(0.0, 1.0))
        half_b = model(_batch(1.0, 0.5))
    assert set(both) == set(only_a) and len(both) == 2 * 9  # 3 streams x (ce, bbox, giou) x 2 layers
    for k in both:
        assert torch.isfinite(both[k])
        assert both[k].item() == pytest.approx(only_a[k].item() + only_b[k].item(), rel=1e-4, abs=1e-6)
        assert half_b[k].item() == pytest.approx(only_a[k].item() + 0.5 * only_b[k].item(), rel=1e-4, abs=1e-6)
        assert only_b[k].item() > 0  # image b contributes to every term (its unmatched queries included)


def test_no_object_terms_of_an_image_without_relations_are_weighted():
    model = tiny_speaq()
    model.train()
    empty = scene([(4, 4, 20, 20)], [0], [], image_id=3)
    with torch.no_grad():
        l1 = model([_batch()[0], dict(empty, loss_weight=1.0)])
        l3 = model([_batch()[0], dict(empty, loss_weight=3.0)])
        l0 = model([_batch()[0], dict(empty, loss_weight=0.0)])
    for s in ("sub", "obj", "rel"):
        k = f"loss_{s}_ce"
        # Its queries are all no-object / no-relation: that CE is kept and scales with the image's weight.
        assert l3[k].item() - l0[k].item() == pytest.approx(3 * (l1[k].item() - l0[k].item()), rel=1e-4)
        assert l1[k].item() > l0[k].item()
        assert l1[f"loss_{s}_bbox"].item() == pytest.approx(l0[f"loss_{s}_bbox"].item(), rel=1e-6)


def test_losses_backpropagate_and_are_finite_without_any_relation():
    model = tiny_speaq()
    model.train()
    losses = model([scene([(4, 4, 20, 20)], [0], [])])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.relation_class.weight.grad.abs().sum() > 0


def test_triplet_inference_snaps_duplicates_and_removes_repeated_triplets():
    big = 10.0
    # Query 0 and 1 both predict (class 0 at A) -> (class 1 at B) with predicate 2; query 2 predicts A -> C.
    a, b, c = [0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2], [0.25, 0.75, 0.2, 0.2]
    a2 = [0.26, 0.25, 0.2, 0.2]  # a near-duplicate of A
    out = {"sub_boxes": torch.tensor([a, a2, a]), "obj_boxes": torch.tensor([b, b, c]),
           "sub_logits": torch.tensor([[big, 0, 0, 0], [big, 0, 0, 0], [big, 0, 0, 0]]),
           "obj_logits": torch.tensor([[0, big, 0, 0], [0, big, 0, 0], [0, 0, big, 0]]),
           "rel_logits": torch.tensor([[0, 0, 3.0, 0, 0], [0, 0, 2.0, 0, 0], [1.0, 0, 0, 0, 0]])}
    pred = triplet_inference(out, (100, 200), nms_thresh=0.5, topk=10)
    assert len(pred["boxes"]) == 3  # A (duplicates merged), B, C
    assert pred["rel_pairs"].shape == (2, 2)  # the second A->B triplet is a duplicate
    boxes = pred["boxes"][pred["rel_pairs"][0]]
    assert torch.allclose(boxes[0], torch.tensor([30.0, 15.0, 70.0, 35.0]), atol=1.5)  # original pixels (w 200, h 100)
    assert pred["labels"][pred["rel_pairs"][0]].tolist() == [0, 1]
    assert pred["rel_scores"].shape == (2, 4) and pred["rel_scores"][0].argmax().item() == 2
    sub, obj = pred["rel_pairs"].unbind(1)
    s = pred["rel_scores"].max(1).values * pred["scores"][sub] * pred["scores"][obj]
    assert torch.all(s[:-1] >= s[1:])  # sorted by p(pred) * s_sub * s_obj


def _released_inference(out, image_size, nms_thresh):
    """IterativeSG / SpeaQ's released ``inference`` (test_index -1, NUM_REL 1, no PNMS), restated: NMS over the 2Q
    entities, each entity assigned to the kept box of its class it overlaps most, triplets sorted by
    p(pred) * s_sub * s_obj of the queries, the first of each (pair, predicate) kept."""
    h, w = image_size
    q = out["rel_logits"].shape[0]
    ent = torch.cat([out["sub_logits"], out["obj_logits"]]).softmax(-1)[:, :-1]
    scores, labels = ent.max(-1)
    boxes = box_cxcywh_to_xyxy(torch.cat([out["sub_boxes"], out["obj_boxes"]])) * torch.tensor([w, h, w, h])
    keep = torchvision.ops.batched_nms(boxes, scores, labels, nms_thresh)
    ious = torchvision.ops.box_iou(boxes, boxes[keep])
    assign = torch.zeros_like(labels)
    for c in torch.unique(labels[keep]):
        rows, cols = torch.where(labels == c)[0], torch.where(labels[keep] == c)[0]
        assign[rows] = cols[ious[rows][:, cols].argmax(-1)]
    pairs = torch.stack(torch.split(assign, q), 1)
    rel = out["rel_logits"].softmax(-1)[:, :-1]
    r_score, r_label = rel.max(-1)
    order = torch.sort(r_score * scores[:q] * scores[q:], descending=True)[1]
    seen, kept = set(), []
    for i in order.tolist():
        key = (*pairs[i].tolist(), r_label[i].item())
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return pairs[kept], rel[kept], boxes[keep], scores[keep]


def test_upstream_triplet_rule_is_the_released_inference():
    g = torch.Generator().manual_seed(0)
    q, classes, predicates = 40, 3, 5
    centres = torch.rand(6, 2, generator=g) * 0.6 + 0.2  # entities cluster around 6 places: NMS and snapping matter
    def boxes():
        c = centres[torch.randint(0, 6, (q,), generator=g)] + torch.randn(q, 2, generator=g) * 0.02
        return torch.cat([c, torch.rand(q, 2, generator=g) * 0.1 + 0.15], 1)
    out = {"sub_boxes": boxes(), "obj_boxes": boxes(), "sub_logits": torch.randn(q, classes + 1, generator=g) * 2,
           "obj_logits": torch.randn(q, classes + 1, generator=g) * 2,
           "rel_logits": torch.randn(q, predicates + 1, generator=g) * 2}
    pairs, rel, boxes_kept, scores_kept = _released_inference(out, (120, 160), 0.5)
    pred = triplet_inference(out, (120, 160), nms_thresh=0.5, topk=10**6, rule="upstream")
    assert torch.equal(pred["rel_pairs"], pairs) and torch.allclose(pred["rel_scores"], rel)
    assert torch.allclose(pred["boxes"], boxes_kept) and torch.allclose(pred["scores"], scores_kept)
    assert (pairs[:, 0] == pairs[:, 1]).any()  # self-pairs: kept by the released code
    short = triplet_inference(out, (120, 160), nms_thresh=0.5, topk=7, rule="upstream")
    assert torch.equal(short["rel_pairs"], pairs[:7])
    ours = triplet_inference(out, (120, 160), nms_thresh=0.5, topk=10**6)
    assert (ours["rel_pairs"][:, 0] != ours["rel_pairs"][:, 1]).all() and len(ours["rel_pairs"]) < len(pairs)
    assert TRIPLET_RULES == ("sgg", "upstream")
    with pytest.raises(ValueError, match="TRIPLET_RULE"):
        triplet_inference(out, (120, 160), nms_thresh=0.5, topk=5, rule="released")


def test_overfits_one_image(one_thread):
    """One image, a few steps: its triplets must come back at the top of the ranking."""
    torch.manual_seed(0)
    x = scene([(4, 6, 24, 26), (36, 30, 60, 58), (40, 4, 58, 20)], [0, 1, 2], [(0, 1, 1), (2, 1, 3)])
    model = fit(tiny_speaq(queries=4, hidden=32), [x])  # R@5 reaches 1.0 after ~60 steps
    with torch.no_grad():
        pred, = model([x])
    gt = {"boxes": x["gt_boxes"], "labels": x["gt_classes"], "relations": x["gt_relations"]}
    metrics = evaluate_scene_graphs([gt], [pred], num_predicates=4, ks=(5,))
    assert metrics["R@5"] == 1.0, (metrics, pred)
    # Untrained, the same model recovers nothing: the recall above is learned.
    untrained = tiny_speaq(queries=4, hidden=32).eval()
    with torch.no_grad():
        assert evaluate_scene_graphs([gt], [untrained([x])[0]], num_predicates=4, ks=(5,))["R@5"] == 0.0


def _register_fake_vg(name, num_predicates=50):
    if name not in MetadataCatalog.list():
        MetadataCatalog.get(name).set(predicate_frequencies=VG_FREQ[:num_predicates],
                                      thing_classes=[f"c{i}" for i in range(150)],
                                      predicate_classes=[f"p{i}" for i in range(num_predicates)])


def test_full_size_config_builds_and_trains_one_step_on_cpu(one_thread):
    _register_fake_vg("speaq_test_vg_train")
    _register_fake_vg("speaq_test_synthetic_train")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "speaq_multi_dataset.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "DATASETS.MULTI_DATASET.REAL_DATASETS", "('speaq_test_vg_train',)",
                         "DATASETS.MULTI_DATASET.SYNTHETIC_DATASETS", "('speaq_test_synthetic_train',)"])
    model = build_model(cfg)
    assert isinstance(model.matcher, SpeaQMatcher)
    assert model.rel_query.weight.shape == (600, 256) and model.sub_query.weight.shape == (300, 256)
    assert torch.bincount(model.matcher.query_group).tolist() == [290, 116, 88, 106]
    assert model.entity_class.out_features == 151 and model.relation_class.out_features == 51
    assert model.backbone.out_channels == 2048 and len(model.decoder.sub_layers) == 6
    assert len(model.encoder.layers) == 6
    model.train()
    # One 64x64 image keeps this CPU step short (the 3 x 6 decoder layers over 600 queries dominate).
    batch = [scene([(4, 4, 30, 30), (32, 32, 60, 60), (10, 34, 28, 60)], [5, 149, 0], [(0, 1, 0), (2, 0, 49)],
                   weight=0.5)]
    losses = model(batch)
    assert len(losses) == 9 * 6
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.box_head.layers[0].weight.grad is not None


@pytest.mark.parametrize("name", ["Base-SpeaQ.yaml", "visual_genome.yaml", "synthetic_genome.yaml",
                                  "speaq_multi_dataset.yaml", "iterative_sg.yaml", "quick/speaq_demo.yaml"])
def test_configs_load(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    d = cfg.MODEL.DETR
    if name == "iterative_sg.yaml":
        assert cfg.MODEL.META_ARCHITECTURE == "IterativeSG" and d.MULTIPLY_QUERY == 1 and not d.USE_GROUP_MASK
        assert d.ONE2MANY_SCHEME == "none" and cfg.MODEL.MATCHER.NAME == "IterativeHungarianMatcher"
    else:
        speaq_parts = (d.ONE2MANY_SCHEME, d.MULTIPLY_QUERY, d.MATCH_INDEPENDENT, d.USE_GROUP_MASK)
        assert speaq_parts == ("dynamic", 2, True, True)
    if name == "speaq_multi_dataset.yaml":
        assert cfg.SOLVER.BASE_LR == 1e-4 and cfg.SOLVER.IMS_PER_BATCH == 20 and cfg.SOLVER.MAX_ITER == 150000
        assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.01 and cfg.SOLVER.AMP.ENABLED
        assert cfg.SOLVER.BACKBONE_MULTIPLIER == 0.1 and d.NUM_GROUPS == 4 and cfg.DATASETS.MULTI_DATASET.ENABLED
    # the dense auxiliary loss is a CPU-demo aid only: off in every full-size config
    assert (d.ENCODER_AUX_CLASS_WEIGHT > 0) == name.startswith("quick/")


def test_demo_detector_config_matches_the_demo_speaq():
    """configs/quick/detr_demo.yaml must produce a checkpoint speaq_demo.yaml can start from (same model keys)."""
    detr, speaq = get_cfg(), get_cfg()
    detr.merge_from_file(os.path.join(CONFIGS, "quick", "detr_demo.yaml"))
    speaq.merge_from_file(os.path.join(CONFIGS, "quick", "speaq_demo.yaml"))
    assert detr.MODEL.META_ARCHITECTURE == "DETR" and speaq.MODEL.META_ARCHITECTURE == "SpeaQ"
    for key in ("NUM_QUERIES", "HIDDEN_DIM", "NHEADS", "DIM_FEEDFORWARD", "ENC_LAYERS", "DEC_LAYERS"):
        assert detr.MODEL.DETR[key] == speaq.MODEL.DETR[key], key
    assert detr.MODEL.BACKBONE == speaq.MODEL.BACKBONE and detr.MODEL.ROI_HEADS == speaq.MODEL.ROI_HEADS


def test_speaq_keys_need_the_speaq_matcher():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "iterative_sg.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.DETR.USE_GROUP_MASK", "True", "DATASETS.TRAIN", "()"])
    with pytest.raises(ValueError, match="SpeaQMatcher"):
        build_model(cfg)
    cfg.merge_from_list(["MODEL.DETR.USE_GROUP_MASK", "False", "TEST.RELATION.MODE", "predcls"])
    with pytest.raises(ValueError, match="sgdet"):
        build_model(cfg)


def test_speaq_matcher_in_the_model_with_multiplied_queries():
    matcher = SpeaQMatcher(predicate_group=torch.tensor([0, 0, 1, 1]), query_group=torch.tensor([0] * 4 + [1] * 4),
                           use_group_mask=True, one2many_scheme="dynamic")
    model = tiny_speaq(queries=4, matcher=matcher, multiply=2)
    assert model.rel_query.weight.shape[0] == 8 and model.sub_query.weight.shape[0] == 4
    model.train()
    losses = model(_batch(1.0, 0.5))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        pred = model(_batch())[0]
    assert pred["rel_scores"].shape[1] == 4 and pred["rel_pairs"].shape[0] <= 8


def test_speaq_starts_from_the_detector_with_its_decoder_replicated(tmp_path):
    detr = tiny_detr(queries=3, aux=1.0, seed=1)
    path = str(tmp_path / "detr.pth")
    atomic_torch_save({"model": detr.state_dict()}, path)
    speaq = tiny_speaq(queries=3, multiply=2, detector_weights=path, seed=5)
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
