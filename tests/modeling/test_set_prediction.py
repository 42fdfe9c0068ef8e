"""Set-prediction building blocks (sgg.modeling.set_prediction): config keywords, padding, the front end, the dense
auxiliary labels and loss, per-sample weights and the matched CE + L1 + GIoU losses."""

import pytest
import torch
import torch.nn.functional as F

from sgg.config import get_cfg
from sgg.modeling.backbone.small_cnn import SmallCNN
from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher
from sgg.modeling.meta_arch.detr import DETR
from sgg.modeling.meta_arch.speaq import SpeaQ
from sgg.modeling.set_prediction import (
    DETRFrontEnd,
    boxes_over_ranks,
    dense_entity_labels,
    detr_kwargs,
    encoder_class_loss,
    feature_padding_mask,
    loss_weight_of,
    pad_and_normalize,
    sample_loss_weights,
    set_prediction_losses,
)
from sgg.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from tests.modeling.set_prediction_tiny import scene


def _small_cfg():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "SmallCNN", "MODEL.BACKBONE.OUT_CHANNELS", 16,
                         "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", 7,
                         "MODEL.DETR.NUM_QUERIES", 3, "MODEL.DETR.HIDDEN_DIM", 16, "MODEL.DETR.NHEADS", 2,
                         "MODEL.DETR.DIM_FEEDFORWARD", 32, "MODEL.DETR.ENC_LAYERS", 1, "MODEL.DETR.DEC_LAYERS", 2,
                         "MODEL.DETR.DROPOUT", 0.0, "MODEL.DETR.NO_OBJECT_WEIGHT", 0.2,
                         "MODEL.DETR.ENCODER_AUX_CLASS_WEIGHT", 0.5])
    return cfg


def test_detr_kwargs_are_the_shared_constructor_keywords():
    cfg = _small_cfg()
    kwargs = detr_kwargs(cfg)
    assert isinstance(kwargs.pop("backbone"), SmallCNN)
    assert kwargs == {"num_classes": 5, "num_predicates": 7, "num_queries": 3, "hidden_dim": 16, "nheads": 2,
                      "dim_feedforward": 32, "enc_layers": 1, "dec_layers": 2, "dropout": 0.0,
                      "deep_supervision": True, "class_weight": 1.0, "l1_weight": 5.0, "giou_weight": 2.0,
                      "no_object_weight": 0.2, "encoder_aux_class_weight": 0.5,
                      "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD}
    # both models take every shared keyword and read the rest themselves
    assert set(DETR.from_config(cfg)) == set(detr_kwargs(cfg)) | {"cost_class", "cost_bbox", "cost_giou"}
    DETR(**detr_kwargs(cfg))
    speaq = SpeaQ(**detr_kwargs(cfg), matcher=IterativeHungarianMatcher())
    assert speaq.entity_class_weights.tolist() == pytest.approx([1.0] * 5 + [0.2])


def test_pad_and_normalize_zero_pads_after_normalising():
    a = torch.randint(0, 256, (3, 2, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 4, 2), dtype=torch.uint8)
    mean, std = torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1), torch.tensor([50.0, 60.0, 70.0]).view(3, 1, 1)
    batch, mask = pad_and_normalize([{"image": a}, {"image": b}], mean, std)
    assert batch.shape == (2, 3, 4, 3) and batch.dtype == torch.float32 and mask.shape == (2, 4, 3)
    assert torch.equal(batch[0, :, :2, :3], (a.float() - mean) / std)
    assert torch.equal(batch[1, :, :4, :2], (b.float() - mean) / std)
    assert not batch[0, :, 2:].any() and not batch[1, :, :, 2:].any()
    assert mask[0].tolist() == [[False] * 3] * 2 + [[True] * 3] * 2
    assert mask[1].tolist() == [[False, False, True]] * 4


class _FrontEnd(DETRFrontEnd):
    def __init__(self, *, hidden_dim=16, nheads=2, aux=0.0):
        super().__init__()
        cfg = get_cfg()
        cfg.MODEL.BACKBONE.OUT_CHANNELS = 8
        self.build_front_end(SmallCNN(cfg), hidden_dim=hidden_dim, nheads=nheads, dim_feedforward=32, dropout=0.0,
                             num_layers=1)
        self.build_encoder_aux_head(hidden_dim, 3, aux)
        self.build_pixel_normalizer((127.5,) * 3, (64.0,) * 3)


def test_front_end_validates_and_encodes_on_the_feature_grid():
    with pytest.raises(ValueError, match="divisible by NHEADS"):
        _FrontEnd(hidden_dim=18, nheads=4)
    with pytest.raises(ValueError, match="ENCODER_AUX_CLASS_WEIGHT must be >= 0"):
        _FrontEnd(aux=-1.0)
    assert _FrontEnd().encoder_class is None and _FrontEnd(aux=2.0).encoder_class.out_features == 4
    model = _FrontEnd()
    assert model.device == torch.device("cpu") and "pixel_mean" not in model.state_dict()
    inputs = [{"image": torch.zeros((3, 32, 48), dtype=torch.uint8)}, {"image": torch.zeros((3, 16, 32),
                                                                                        dtype=torch.uint8)}]
    enc = model.encode(*model.preprocess(inputs))
    assert enc["memory"].shape == enc["pos"].shape == (2, 2 * 3, 16) and enc["stride"] == 16.0
    assert enc["grid_padding"].tolist() == [[[False] * 3] * 2, [[False, False, True], [True] * 3]]
    assert torch.equal(enc["padding"], enc["grid_padding"].flatten(1))


def test_dense_labels_take_the_smallest_covering_box():
    x = scene([(0, 0, 32, 32), (8, 8, 24, 24)], [0, 1], [(1, 0, 0)], size=(32, 64))
    labels = dense_entity_labels([x], (2, 4), 16.0, background=3, device=torch.device("cpu"))
    # cell centres x = 8, 24, 40, 56 and y = 8, 24: (8, 8) lies in both boxes -> the smaller (class 1); boxes are
    # half-open, so (24, 24) is outside the small box [8, 24) and gets the big one's class
    assert labels.view(2, 4).tolist() == [[1, 0, 3, 3], [0, 0, 3, 3]]


def test_encoder_class_loss_is_the_class_weighted_ce_over_unpadded_cells():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 3), torch.tensor([[0, 2, 1, 2], [1, 1, 2, 0]])
    padding = torch.tensor([[False, False, False, True], [False, True, False, False]])
    class_w = torch.tensor([1.0, 0.5, 0.1])
    loss = encoder_class_loss(logits, labels, padding, class_w, torch.ones(2))
    keep = ~padding
    expected = F.cross_entropy(logits[keep], labels[keep], weight=class_w)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # an image's weight scales its cells' terms, the normaliser stays the same
    half = encoder_class_loss(logits, labels, padding, class_w, torch.tensor([1.0, 0.0]))
    only_first = F.cross_entropy(logits[0][keep[0]], labels[0][keep[0]], weight=class_w, reduction="sum")
    assert half.item() == pytest.approx(only_first.item() / class_w[labels[keep]].sum().item(), rel=1e-6)


def test_loss_weights_default_to_one_and_are_checked():
    assert loss_weight_of({}) == 1.0 and loss_weight_of({"loss_weight": 0.5}) == 0.5
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="image 7: loss_weight must be finite and >= 0"):
            loss_weight_of({"loss_weight": bad, "image_id": 7})
    w = sample_loss_weights([{}, {"loss_weight": 0.25}], torch.device("cpu"))
    assert w.dtype == torch.float32 and w.tolist() == [1.0, 0.25]


def test_boxes_over_ranks_is_at_least_one_on_one_process():
    assert boxes_over_ranks(torch.tensor([0.0, 0.5, 3.0])).tolist() == [1.0, 1.0, 3.0]


def _prediction_set():
    torch.manual_seed(0)
    logits, boxes = torch.randn(2, 3, 3, requires_grad=True), torch.rand(2, 3, 4) * 0.4 + 0.1
    boxes.requires_grad_(True)
    indices = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    labels = [torch.tensor([0, 1]), torch.tensor([1])]
    tgt_boxes = [torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]]), torch.tensor([[0.5, 0.5, 0.5, 0.5]])]
    return logits, boxes, indices, labels, tgt_boxes


def test_set_prediction_losses_are_detr_losses_scaled_per_image():
    logits, boxes, indices, labels, tgt_boxes = _prediction_set()
    class_w, coef = torch.tensor([1.0, 1.0, 0.1]), {"ce": 1.0, "bbox": 5.0, "giou": 2.0}

    def losses(sample_w):
        return set_prediction_losses(logits, boxes, indices, labels, tgt_boxes, class_weights=class_w,
                                     sample_weights=torch.tensor(sample_w), num_boxes=torch.tensor(3.0), coef=coef)

    out = losses([1.0, 1.0])
    target_cls = torch.tensor([[0, 2, 1], [2, 1, 2]])  # unmatched queries -> background (2)
    assert out["ce"].item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), target_cls.flatten(),
                                                             weight=class_w).item(), rel=1e-6)
    pred = torch.stack([boxes[0, 2], boxes[0, 0], boxes[1, 1]])
    gt = torch.stack([tgt_boxes[0][1], tgt_boxes[0][0], tgt_boxes[1][0]])
    assert out["bbox"].item() == pytest.approx(5.0 * (pred - gt).abs().sum().item() / 3, rel=1e-6)
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))
    assert out["giou"].item() == pytest.approx(2.0 * (1 - giou).sum().item() / 3, rel=1e-6)
    only_a, only_b, mixed = losses([1.0, 0.0]), losses([0.0, 1.0]), losses([1.0, 0.5])
    for k in ("ce", "bbox", "giou"):
        assert mixed[k].item() == pytest.approx(only_a[k].item() + 0.5 * only_b[k].item(), rel=1e-6)


def test_set_prediction_losses_without_any_match_keep_the_box_graph():
    logits, boxes, _, labels, tgt_boxes = _prediction_set()
    none = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))] * 2
    out = set_prediction_losses(logits, boxes, none, labels, tgt_boxes, class_weights=torch.tensor([1.0, 1.0, 0.1]),
                                sample_weights=torch.ones(2), num_boxes=torch.tensor(1.0),
                                coef={"ce": 1.0, "bbox": 5.0, "giou": 2.0})
    assert out["bbox"].item() == 0.0 and out["giou"].item() == 0.0
    sum(out.values()).backward()
    assert boxes.grad is not None and not boxes.grad.any() and logits.grad.abs().sum() > 0


def test_feature_padding_mask_rules():
    """Two images, 70 x 64 and 96 x 90 pixels, padded to 96 x 90, on a stride-32 grid of 3 x 3 cells."""
    mask = torch.ones(2, 96, 90, dtype=torch.bool)
    mask[0, :70, :64] = False
    mask[1] = False
    ceil = feature_padding_mask(mask, (3, 3), "ceil", stride=32)
    # ceil(70 / 32) = 3 rows, ceil(64 / 32) = 2 columns are image (detectron2's DETR wrapper: IterativeSG, SpeaQ)
    assert ceil[0].tolist() == [[False, False, True]] * 3 and not ceil[1].any()
    with pytest.raises(ValueError, match="stride"):
        feature_padding_mask(mask, (3, 3), "ceil")
    # resampling picks pixel columns 0, 30, 60 (all < 64): nothing of image 0 is masked (DETR's code)
    assert not feature_padding_mask(mask, (3, 3), "interpolate").any()
    resampled = F.interpolate(mask[:, None].float(), size=(3, 3)).bool()[:, 0]
    assert torch.equal(feature_padding_mask(mask, (3, 3)), resampled)
    with pytest.raises(ValueError, match="PADDING_MASK"):
        feature_padding_mask(mask, (3, 3), "floor")
