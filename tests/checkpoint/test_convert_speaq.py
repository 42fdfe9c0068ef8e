"""Converters ``speaq`` / ``iterative_sg``: an upstream-shaped ``IterativeRelationDetr`` state dict (documented
layout, scaled down: ResNet-50, width 32, 2 + 3 layers, 6 queries) renames key for key onto sgg's SpeaQ /
IterativeSG, and the converted model computes what the restated upstream forward computes."""

import os

import pytest
import torch

from sgg.checkpoint import DetectionCheckpointer
from sgg.checkpoint.convert import CHECKPOINT_CONVERTERS, WrongCheckpointKindError, save_converted
from sgg.checkpoint.converters.speaq import rename_speaq_key
from sgg.config import get_cfg
from sgg.modeling import build_model
from sgg.modeling.backbone.resnet import ResNet
from sgg.modeling.matchers.hungarian import IterativeHungarianMatcher
from sgg.modeling.meta_arch.speaq import IterativeSG, SpeaQ
from tests.checkpoint.speaq_upstream import ceil_grid_mask, upstream_forward, upstream_state_dict

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
SIZES = dict(d=32, ffn=64, enc=2, dec=3, queries=6, classes=5, predicates=4)
NHEAD = 4


def _sgg_model(multiply, padding_mask="interpolate"):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 50
    cls = SpeaQ if multiply > 1 else IterativeSG
    return cls(backbone=ResNet(cfg), matcher=IterativeHungarianMatcher(), num_classes=SIZES["classes"],
               num_predicates=SIZES["predicates"], num_queries=SIZES["queries"], multiply_query=multiply,
               hidden_dim=SIZES["d"], nheads=NHEAD, dim_feedforward=SIZES["ffn"], enc_layers=SIZES["enc"],
               dec_layers=SIZES["dec"], dropout=0.0, padding_mask=padding_mask).eval()


@pytest.fixture(scope="module")
def upstream():
    return {"speaq": upstream_state_dict(multiply=2, **SIZES), "iterative_sg": upstream_state_dict(multiply=1, **SIZES)}


@pytest.mark.parametrize("kind,multiply", [("speaq", 2), ("iterative_sg", 1)])
def test_key_for_key_rename_loads_strictly(upstream, kind, multiply):
    state = upstream[kind]
    result = CHECKPOINT_CONVERTERS.get(kind)(state, source=f"{kind}.pth")
    assert sorted(result.unmapped) == ["criterion.empty_rel_weight", "criterion.empty_weight"]
    assert any("criterion" in n for n in result.notes)
    assert any(f"MULTIPLY_QUERY {multiply}" in n and "DEC_LAYERS 3" in n and "DEPTH 50" in n for n in result.notes)
    model = _sgg_model(multiply)
    incompatible = model.load_state_dict(result.state_dict, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert len(result.state_dict) == len(model.state_dict()) == len(state) - 2
    for key, value in state.items():  # every tensor arrives unchanged under its new name
        new = rename_speaq_key(key)
        if new is not None:
            assert torch.equal(model.state_dict()[new], value), (key, new)


def test_some_renames_spelled_out():
    assert rename_speaq_key("detr.backbone.0.backbone.res3.0.shortcut.norm.running_var") == \
        "backbone.stages.1.0.downsample.1.running_var"
    assert rename_speaq_key("detr.backbone.0.backbone.stem.conv1.norm.weight") == "backbone.stem.1.weight"
    assert rename_speaq_key("detr.backbone.0.backbone.res5.2.conv2.norm.bias") == "backbone.stages.3.2.bn2.bias"
    assert rename_speaq_key("detr.transformer.decoder.relation_layers.4.multihead_attn.in_proj_weight") == \
        "decoder.rel_layers.4.cross_attn.in_proj_weight"
    assert rename_speaq_key("detr.transformer.decoder.object_graph_query_residual.1.bias") == \
        "decoder.graph_proj.obj.1.bias"
    assert rename_speaq_key("detr.transformer.decoder.subject_norm.weight") == "decoder.entity_norm.weight"
    assert rename_speaq_key("detr.query_embed.weight") == "sub_query.weight"
    assert rename_speaq_key("detr.transformer.object_bbox_coords.layers.2.weight") == "box_head.layers.2.weight"
    assert rename_speaq_key("detr.class_embed.weight") is None and rename_speaq_key("criterion.empty_weight") is None


@pytest.mark.parametrize("kind,multiply", [("speaq", 2), ("iterative_sg", 1)])
@pytest.mark.parametrize("sizes,rule", [([(64, 96)], "interpolate"), ([(96, 64), (70, 90)], "ceil")])
def test_outputs_equal_the_restated_upstream_forward(upstream, kind, multiply, sizes, rule):
    """Whole network (backbone, projection, positions, encoder, three decoders, heads, every layer) on random
    weights; two images of different sizes need the 'ceil' padding mask of detectron2's DETR wrapper."""
    state = upstream[kind]
    model = _sgg_model(multiply, padding_mask=rule)
    model.load_state_dict(CHECKPOINT_CONVERTERS.get(kind)(state, source="x").state_dict)
    g = torch.Generator().manual_seed(3)
    batched = [{"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": h, "width": w}
               for h, w in sizes]
    with torch.no_grad():
        images, mask = model.preprocess(batched)
        layers, _ = model.network(images, mask)
        grid = (-(-images.shape[-2] // 32), -(-images.shape[-1] // 32))
        expected = upstream_forward(state, images, ceil_grid_mask(sizes, grid, 32), nhead=NHEAD, enc=SIZES["enc"],
                                    dec=SIZES["dec"])
    assert len(layers) == len(expected) == SIZES["dec"]
    for got, want in zip(layers, expected):
        for key in want:
            assert got[key].shape == want[key].shape, key
            torch.testing.assert_close(got[key], want[key], atol=2e-5, rtol=1e-4, msg=key)


def test_interpolated_mask_differs_from_upstream_on_mixed_sizes(upstream):
    """Why PADDING_MASK exists: with sgg's default resampled mask the narrower image's last feature column is not
    masked, so the outputs differ from upstream's."""
    state = upstream["speaq"]
    model = _sgg_model(2)
    model.load_state_dict(CHECKPOINT_CONVERTERS.get("speaq")(state, source="x").state_dict)
    g = torch.Generator().manual_seed(3)
    sizes = [(96, 64), (70, 90)]
    batched = [{"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": h, "width": w}
               for h, w in sizes]
    with torch.no_grad():
        images, mask = model.preprocess(batched)
        layers, _ = model.network(images, mask)
        expected = upstream_forward(state, images, ceil_grid_mask(sizes, (3, 3), 32), nhead=NHEAD, enc=2, dec=3)
    assert (layers[-1]["rel_logits"] - expected[-1]["rel_logits"]).abs().max() > 1e-3


def test_wrong_kinds(upstream):
    with pytest.raises(WrongCheckpointKindError, match="did you mean --from iterative_sg"):
        CHECKPOINT_CONVERTERS.get("speaq")(upstream["iterative_sg"], source="isg.pth")
    with pytest.raises(WrongCheckpointKindError, match="did you mean --from speaq"):
        CHECKPOINT_CONVERTERS.get("iterative_sg")(upstream["speaq"], source="speaq.pth")
    sgg_state = _sgg_model(2).state_dict()  # an sgg checkpoint needs no conversion
    with pytest.raises(WrongCheckpointKindError,
                       match=r"no 'detr\.transformer\.decoder\.subject_layers\.\*' keys: this is not an IterativeSG"):
        CHECKPOINT_CONVERTERS.get("speaq")(sgg_state, source="sgg.pth")
    broken = {k: v for k, v in upstream["speaq"].items() if k != "detr.relation_query_embed.weight"}
    with pytest.raises(WrongCheckpointKindError, match="relation_query_embed.weight' is missing"):
        CHECKPOINT_CONVERTERS.get("speaq")(broken, source="b.pth")


def test_released_config_builds_the_model_the_converted_file_loads_into(upstream, tmp_path):
    """configs/iterative_sg_released.yaml (+ the layout overrides the converter prints) -> build_model -> the strict
    MODEL.WEIGHTS load of the converted file; the config carries upstream's inference rules."""
    result = CHECKPOINT_CONVERTERS.get("iterative_sg")(upstream["iterative_sg"], source="isg.pth")
    dst = tmp_path / "isg_sgg.pth"
    save_converted(result, str(dst), converter="iterative_sg", source="isg.pth")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "iterative_sg_released.yaml"))
    layout = next(n for n in result.notes if n.startswith("the checkpoint's layout")).split(": ", 1)[1].split()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "MODEL.DETR.NHEADS", str(NHEAD), *layout])
    assert cfg.MODEL.DETR.TRIPLET_RULE == "upstream" and cfg.MODEL.DETR.PADDING_MASK == "ceil"
    model = build_model(cfg)
    assert isinstance(model, IterativeSG) and model.triplet_rule == "upstream" and model.padding_mask == "ceil"
    DetectionCheckpointer(model, save_to_disk=False).load(str(dst), checkpointables=[], strict=True)
    assert torch.equal(model.rel_query.weight, upstream["iterative_sg"]["detr.relation_query_embed.weight"])


@pytest.mark.parametrize("name", ["speaq_released.yaml", "iterative_sg_released.yaml"])
def test_released_configs(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    d = cfg.MODEL.DETR
    assert (d.TRIPLET_RULE, d.PADDING_MASK, cfg.DATASETS.TEST) == ("upstream", "ceil", ("vg_test",))
    assert cfg.MODEL.BACKBONE.NAME == "ResNet" and cfg.MODEL.BACKBONE.DEPTH == 101
    assert (d.OVERSAMPLE_PARAM, d.UNDERSAMPLE_PARAM) == (0.07, 1.5)  # alpha, 2 x beta (beta 0.75) in both READMEs
    assert (d.NUM_QUERIES, d.MULTIPLY_QUERY, d.DEC_LAYERS, d.ENC_LAYERS, d.HIDDEN_DIM) == \
        (300, 2 if name.startswith("speaq") else 1, 6, 6, 256)
