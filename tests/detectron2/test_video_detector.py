"""detectron2's Faster R-CNN heads as the SGDet detector of STTran (D2VideoObjectDetector)."""

import pytest
import torch

from sgg.config import ConfigError
from sgg.modeling import build_model
from tests.modeling.meta_arch.test_sttran import check_prediction, make_video, tiny_cfg

from .common import requires_detectron2

pytestmark = requires_detectron2


def _cfg(*opts):
    cfg = tiny_cfg("sgdet")
    cfg.merge_from_list(["MODEL.VIDEO_DETECTOR.NAME", "D2VideoObjectDetector",
                         "MODEL.VIDEO_DETECTOR.ANCHOR_SIZES", (24, 48), *opts])
    return cfg


def test_sttran_sgdet_trains_and_detects_with_detectron2s_heads():
    torch.manual_seed(0)
    model = build_model(_cfg())
    detector = model.detector
    assert type(detector).__name__ == "D2VideoObjectDetector"
    assert type(detector.roi_heads).__name__ == "StandardROIHeads" and detector.num_classes == 36
    assert [len(a) for a in detector.proposal_generator.anchor_generator.cell_anchors] == [2 * 3]  # sizes x ratios
    video = make_video(2, num_frames=2)
    losses = model.train()([video])
    assert {"loss_det_rpn_cls", "loss_det_rpn_loc", "loss_det_cls", "loss_det_box_reg", "loss_object"} <= set(losses)
    sum(losses.values()).backward()
    assert detector.proposal_generator.rpn_head.conv.weight.grad.abs().sum() > 0
    assert model.features.backbone.body[0][0].weight.grad.abs().sum() > 0  # detector losses reach the backbone
    out = model.eval()([video])[0]
    check_prediction(video, out)
    boxes = torch.cat([f["boxes"] for f in out["frames"]])
    assert len(boxes) > 0 and (boxes[:, 2] <= 160 + 1e-3).all()  # original pixels (2 x the 80 px input)


def test_detector_weights_round_trip_through_detectron2s_checkpointer(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    torch.manual_seed(1)
    trained = build_model(_cfg()).detector
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("detector")
    torch.manual_seed(2)
    loaded = build_model(_cfg("MODEL.VIDEO_DETECTOR.WEIGHTS", str(tmp_path / "detector.pth"),
                              "MODEL.VIDEO_DETECTOR.TRAIN", False)).detector
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_detector_config_errors_are_clear():
    with pytest.raises(ConfigError, match=r"Unknown detectron2 config key 'MODEL.VIDEO_DETECTOR.D2.MODEL.RPN.NMS_TRESH'"
                                          r".*Did you mean 'MODEL.VIDEO_DETECTOR.D2.MODEL.RPN.NMS_THRESH'\?"):
        build_model(_cfg("MODEL.VIDEO_DETECTOR.D2.MODEL.RPN.NMS_TRESH", 0.5))
    with pytest.raises(ConfigError, match="detectron2 refused the detector config"):
        build_model(_cfg("MODEL.VIDEO_DETECTOR.D2.MODEL.ROI_HEADS.NAME", "NoSuchHeads"))
