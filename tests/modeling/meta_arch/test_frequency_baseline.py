"""FrequencyBaseline: counted table and oracle-box predictions."""

import pytest
import torch

from sgg.config import ConfigError, get_cfg
from sgg.model_zoo import get_config_file
from sgg.modeling import build_model
from sgg.modeling.meta_arch.frequency_baseline import FrequencyBaseline, predicate_frequency_table


def test_table_counts_and_predictions():
    dicts = [{"labels": [0, 1, 1], "relations": [[0, 1, 2], [0, 2, 2], [1, 0, 0]]},
             {"labels": [0, 1], "relations": [[0, 1, 1]]}, {"labels": [2], "relations": []}]
    table = predicate_frequency_table(dicts, num_classes=3, num_predicates=3)
    assert table[0, 1].tolist() == [0, 1, 2] and table[1, 0].tolist() == [1, 0, 0] and table.sum() == 4
    model = FrequencyBaseline(table=table).eval()
    x = {"image": torch.zeros(3, 50, 100), "height": 100, "width": 200, "image_id": 0,
         "gt_boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 10]]),
         "gt_classes": torch.tensor([0, 1, 2])}
    pred, = model([x])
    assert torch.allclose(pred["boxes"][1], torch.tensor([40.0, 40, 80, 80]))  # back to original pixels
    assert pred["rel_pairs"].shape == (6, 2) and pred["rel_scores"].shape == (6, 3)
    rows = {tuple(p): s for p, s in zip(pred["rel_pairs"].tolist(), pred["rel_scores"])}
    assert rows[(0, 1)].argmax().item() == 2 and rows[(1, 0)].argmax().item() == 0
    # (2, 0) never seen in training: the global predicate distribution [1, 1, 2] / 4.
    assert torch.allclose(rows[(2, 0)], torch.tensor([0.25, 0.25, 0.5]), atol=1e-3)
    assert torch.allclose(pred["rel_scores"].sum(1), torch.ones(6), atol=1e-5)
    model.train()
    loss = model([x])["loss_none"]
    assert loss.item() == 0.0 and loss.requires_grad


class _FixedDetector(torch.nn.Module):
    """Stands in for DETR: fixed detections (two duplicates of class 0, one class 1), in original pixels."""

    def forward(self, batched_inputs):
        return [{"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 40, 40]]),
                 "labels": torch.tensor([0, 0, 1]), "scores": torch.tensor([0.9, 0.6, 0.8])} for _ in batched_inputs]


def test_sgdet_freq_uses_the_detections_after_class_wise_nms():
    table = predicate_frequency_table([{"labels": [0, 1], "relations": [[0, 1, 2], [1, 0, 0]]}], 2, 3)
    model = FrequencyBaseline(table=table, detector=_FixedDetector(), nms_thresh=0.5).eval()
    x = {"image": torch.zeros(3, 50, 100), "height": 100, "width": 200, "image_id": 0,
         "gt_boxes": torch.zeros(0, 4), "gt_classes": torch.zeros(0, dtype=torch.int64)}
    pred, = model([x])
    assert pred["labels"].tolist() == [0, 1] and torch.allclose(pred["scores"], torch.tensor([0.9, 0.8]))
    assert pred["rel_pairs"].tolist() == [[0, 1], [1, 0]]
    assert pred["rel_scores"][0].argmax().item() == 2 and pred["rel_scores"][1].argmax().item() == 0


def test_sgdet_freq_loads_sgg_detr_weights_and_refuses_others(tmp_path):
    import pytest

    from sgg.checkpoint import CheckpointError
    from sgg.checkpoint.checkpointer import atomic_torch_save
    from sgg.config import get_cfg
    from sgg.modeling.meta_arch.frequency_baseline import load_detector

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "SmallCNN"
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 16
    cfg.MODEL.DETR.merge_from_list(["HIDDEN_DIM", 16, "NHEADS", 2, "DIM_FEEDFORWARD", 32, "ENC_LAYERS", 1,
                                    "DEC_LAYERS", 1, "NUM_QUERIES", 3])
    cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = 2, 3
    det_cfg = cfg.clone()
    det_cfg.MODEL.META_ARCHITECTURE = "DETR"
    det_cfg.MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT = 1.0
    from sgg.modeling.meta_arch.detr import DETR

    torch.manual_seed(0)
    detr = DETR(det_cfg)
    path = str(tmp_path / "detr.pth")
    atomic_torch_save({"model": detr.state_dict()}, path)
    cfg.MODEL.DETR.DETECTOR_WEIGHTS = path
    loaded = load_detector(cfg)  # aux head absent in this config: tolerated
    assert torch.equal(loaded.state_dict()["query.weight"], detr.state_dict()["query.weight"])
    assert not any(p.requires_grad for p in loaded.parameters())
    cfg.MODEL.DETR.NUM_QUERIES = 4
    with pytest.raises(CheckpointError, match="does not fit.*size mismatch"):
        load_detector(cfg)
    atomic_torch_save({"model": {"other.weight": torch.zeros(1)}}, path)
    cfg.MODEL.DETR.NUM_QUERIES = 3
    with pytest.raises(CheckpointError, match="does not fit"):
        load_detector(cfg)


def test_the_evaluation_mode_must_say_what_the_boxes_are(tmp_path):
    """GT boxes evaluated as sgdet would report box AP 1.0 as detection; a detector's boxes as predcls would be
    matched as GT: both are refused with the fix."""
    cfg = get_cfg()
    cfg.merge_from_file(get_config_file("quick/speaq_demo_frequency_baseline.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(ConfigError, match="TEST.RELATION.MODE predcls"):
        build_model(cfg)  # the config inherits sgdet and gives no detector
    cfg.TEST.RELATION.MODE = "predcls"
    cfg.MODEL.DETR.DETECTOR_WEIGHTS = str(tmp_path / "detr.pth")
    with pytest.raises(ConfigError, match="TEST.RELATION.MODE sgdet"):
        build_model(cfg)
