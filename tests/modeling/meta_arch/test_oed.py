"""OED meta-architecture on a synthetic two-frame video: PredCls queries = GT pairs, SGDet outputs 2Q boxes, the
temporal stage's head initialisation and frozen parameters."""

import pytest
import torch

from sgg.config import get_cfg
from sgg.modeling import build_model


def _cfg(mode, stage="spatial"):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "OED", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", "SmallCNN",
                         "MODEL.BACKBONE.OUT_CHANNELS", "8", "MODEL.OED.HIDDEN_DIM", "8", "MODEL.OED.NHEADS", "2",
                         "MODEL.OED.DIM_FEEDFORWARD", "16", "MODEL.OED.ENC_LAYERS", "1",
                         "MODEL.OED.DEC_LAYERS_HOPD", "2", "MODEL.OED.DEC_LAYERS_INTERACTION", "3",
                         "MODEL.OED.NUM_QUERIES", "5", "MODEL.STTRAN.EMBED_DIM", "4", "TEST.RELATION.MODE", mode,
                         "MODEL.OED.STAGE", stage])
    return cfg


def _video():
    g = torch.Generator().manual_seed(0)
    frames = []
    for t, n in enumerate((3, 2)):
        boxes = torch.tensor([[10.0, 10.0, 40.0, 60.0], [50.0, 20.0, 70.0, 40.0], [5.0, 40.0, 25.0, 60.0]])[:n] + t
        rels = [[0, 1, 1], [1, 0, 5], [0, 1, 12]] + ([[0, 2, 0], [0, 2, 9], [2, 0, 3]] if n == 3 else [])
        frames.append({"boxes": boxes.numpy() * 2, "gt_boxes": boxes, "labels": [0, 3, 7][:n],
                       "relations": torch.tensor(rels), "frame_key": f"v/{t}"})
    return {"video_id": "v", "images": torch.randint(0, 255, (2, 3, 64, 96), generator=g, dtype=torch.uint8),
            "image_scale": 0.5, "frames": frames}


def test_predcls_one_query_per_gt_pair_and_gt_boxes_out():
    torch.manual_seed(0)
    model = build_model(_cfg("predcls"))
    losses = model([_video()])
    # relation losses only (boxes are given), on the last layer and min(2, 3) - 1 = 1 auxiliary layer
    assert set(losses) == {"loss_attention", "loss_spatial", "loss_contacting", "loss_attention_0", "loss_spatial_0",
                           "loss_contacting_0"}
    sum(losses.values()).backward()
    model.eval()
    frames = model([_video()])[0]["frames"]
    assert [len(f["pairs"]) for f in frames] == [2, 1]
    assert frames[0]["pairs"].tolist() == [[0, 1], [0, 2]]
    assert torch.allclose(frames[1]["boxes"], torch.tensor(_video()["frames"][1]["boxes"]))
    assert torch.allclose(frames[0]["attention"].sum(1), torch.ones(2)) and frames[0]["attention"].shape[1] == 3


def test_sgdet_frames_hold_q_subjects_then_q_objects():
    torch.manual_seed(0)
    model = build_model(_cfg("sgdet"))
    losses = model([_video()])
    assert {"loss_obj_ce", "loss_sub_bbox", "loss_obj_giou", "loss_obj_ce_0"} <= set(losses)
    model.eval()
    frame = model([_video()])[0]["frames"][0]
    assert frame["boxes"].shape == (10, 4) and frame["pairs"].tolist() == [[i, 5 + i] for i in range(5)]
    assert (frame["labels"][:5] == 0).all() and (frame["scores"][:5] == 1).all()
    assert (frame["boxes"] >= 0).all() and (frame["boxes"][:, [0, 2]] <= 192).all()  # original pixels (scale 0.5)


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_temporal_heads_start_as_the_spatial_heads_and_only_temporal_parameters_train(mode):
    torch.manual_seed(0)
    model = build_model(_cfg(mode, "temporal"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("refinement.", "temporal_")) for n in trainable)
    with torch.no_grad():  # as after loading a spatial checkpoint: the spatial heads differ from the temporal ones
        for p in model.obj_class.parameters():
            p.add_(0.5)
    assert not torch.equal(model.temporal_obj_class.weight, model.obj_class.weight)
    losses = model([_video()])
    assert int(model.temporal_heads_initialized) == 1
    for name in ("obj_class", "sub_box", "obj_box", "attention_head", "spatial_head", "contacting_head"):
        spatial, temporal = getattr(model, name).state_dict(), getattr(model, "temporal_" + name).state_dict()
        assert all(torch.equal(spatial[k], temporal[k]) for k in spatial), name
    assert not any(k.endswith(("_0", "_1")) for k in losses)  # no auxiliary losses in the temporal stage
    sum(losses.values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert model.refinement.layers[0].cross_attn.in_proj_weight.grad is not None
    # a second copy never happens (e.g. after resuming): trained temporal heads are kept
    with torch.no_grad():
        model.temporal_obj_class.weight.add_(1.0)
    model([_video()])
    assert not torch.equal(model.temporal_obj_class.weight, model.obj_class.weight)
