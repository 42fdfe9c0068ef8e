"""Tiny DETR-style models and synthetic scenes for the set-prediction tests (DETR, SpeaQ / IterativeSG)."""

import torch

from sgg.config import get_cfg
from sgg.modeling.backbone.small_cnn import SmallCNN
from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher
from sgg.modeling.meta_arch.detr import DETR
from sgg.modeling.meta_arch.speaq import SpeaQ

COLOURS = torch.tensor([[220, 40, 40], [40, 200, 60], [50, 80, 230]], dtype=torch.uint8)


def scene(boxes, labels, relations, size=(64, 64), weight=1.0, image_id=0):
    """A flat grey image with filled coloured rectangles: label -> colour."""
    h, w = size
    img = torch.full((3, h, w), 128, dtype=torch.uint8)
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        img[:, y1:y2, x1:x2] = COLOURS[lab % len(COLOURS)][:, None, None]
    return {"image": img, "height": h, "width": w, "image_id": image_id,
            "gt_boxes": torch.tensor(boxes, dtype=torch.float32),
            "gt_classes": torch.tensor(labels), "gt_relations": torch.tensor(relations).reshape(-1, 3),
            "loss_weight": weight, "dataset_type": "real"}


def fit(model, batch, steps=100, lr=3e-3):
    """``steps`` AdamW steps on one batch (overfit tests); returns the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _small_cnn(hidden):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.OUT_CHANNELS = hidden
    return SmallCNN(cfg)


def tiny_detr(*, queries=4, hidden=32, aux=0.0, seed=0):
    """A DETR on 3 classes: one encoder and two decoder layers of width ``hidden``, seeded with ``seed``."""
    torch.manual_seed(seed)
    return DETR(backbone=_small_cnn(hidden), num_classes=3, num_predicates=4, num_queries=queries, hidden_dim=hidden,
                nheads=2, dim_feedforward=64, enc_layers=1, dec_layers=2, dropout=0.0,
                encoder_aux_class_weight=aux)


def tiny_speaq(*, queries=4, hidden=32, matcher=None, multiply=1, aux=0.0, detector_weights="", seed=0):
    """A SpeaQ on 3 classes and 4 predicates (``IterativeHungarianMatcher`` unless ``matcher`` is given), as
    :func:`tiny_detr`; ``multiply`` relation queries per subject/object query, top 20 triplets at inference."""
    torch.manual_seed(seed)
    return SpeaQ(backbone=_small_cnn(hidden), matcher=matcher or IterativeHungarianMatcher(), num_classes=3,
                 num_predicates=4, num_queries=queries, multiply_query=multiply, hidden_dim=hidden, nheads=2,
                 dim_feedforward=64, enc_layers=1, dec_layers=2, dropout=0.0, encoder_aux_class_weight=aux,
                 detector_weights=detector_weights, topk=20)
