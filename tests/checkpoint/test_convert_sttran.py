"""Converters ``ag_detector`` and ``sttran``: state dicts with upstream's exact key names (yrcong/STTran
``lib/sttran.py``, faster-rcnn.pytorch), scaled down, convert and load with nothing missing; after conversion sgg's
modules compute what an independent re-statement of the upstream forward computes (relation vector, transformer,
object classifier); ``--eval-only`` from a converted file runs in PredCls / SGCls / SGDet; wrong files are one line."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sgg.checkpoint import WrongCheckpointKindError
from sgg.checkpoint.converters.sttran import convert_ag_detector, convert_sttran
from sgg.config import get_cfg
from sgg.modeling import build_model
from sgg.modeling.ag_faster_rcnn import AGFasterRCNN
from tests.engine.helpers import assert_one_error_line, run_cli
from tests.tools.tool_loader import load_tool

# scaled-down widths (upstream: object 2048, union 1024, 256, 512, 200, FFN 2048, classifier 1024, position 128)
W, U, V, E, FF, H, POS, ENC, DEC = 8, 16, 16, 8, 32, 24, 8, 1, 2
F_OBJ, C_UNION, D = 32 * W, 16 * W, 3 * 16 + 2 * 8


def upstream_sttran_state(seed: int = 0):
    """An upstream STTran ``state_dict`` (names and shape rules of lib/sttran.py, lib/transformer.py)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {}

    def lin(name, o, i):
        sd[name + ".weight"], sd[name + ".bias"] = r(o, i), r(o)

    def bn(name, n):
        sd.update({name + ".weight": 1 + r(n), name + ".bias": r(n), name + ".running_mean": r(n),
                   name + ".running_var": 0.5 + torch.rand(n, generator=g), name + ".num_batches_tracked":
                   torch.tensor(100)})

    sd["object_classifier.obj_embed.weight"] = r(36, E)
    bn("object_classifier.pos_embed.0", 4)
    lin("object_classifier.pos_embed.1", POS, 4)
    lin("object_classifier.decoder_lin.0", H, F_OBJ + E + POS)
    bn("object_classifier.decoder_lin.1", H)
    lin("object_classifier.decoder_lin.3", 37, H)
    sd["union_func1.weight"], sd["union_func1.bias"] = r(U, C_UNION, 1, 1), r(U)
    sd["conv.0.weight"], sd["conv.0.bias"] = r(U // 2, 2, 7, 7), r(U // 2)
    bn("conv.2", U // 2)
    sd["conv.4.weight"], sd["conv.4.bias"] = r(U, U // 2, 3, 3), r(U)
    bn("conv.6", U)
    lin("subj_fc", V, F_OBJ)
    lin("obj_fc", V, F_OBJ)
    lin("vr_fc", V, U * 49)
    sd["obj_embed.weight"], sd["obj_embed2.weight"] = r(37, E), r(37, E)
    for kind, n, attn, norms in (("local_attention", ENC, "self_attn", ("norm1", "norm2")),
                                 ("global_attention", DEC, "multihead2", ("norm3",))):
        for i in range(n):
            p = f"glocal_transformer.{kind}.layers.{i}."
            sd[p + attn + ".in_proj_weight"], sd[p + attn + ".in_proj_bias"] = r(3 * D, D), r(3 * D)
            lin(p + attn + ".out_proj", D, D)
            lin(p + "linear1", FF, D)
            lin(p + "linear2", D, FF)
            for nm in norms:
                sd[p + nm + ".weight"], sd[p + nm + ".bias"] = 1 + r(D), r(D)
    sd["glocal_transformer.position_embedding.weight"] = torch.rand(2, D, generator=g)
    lin("a_rel_compress", 3, D)
    lin("s_rel_compress", 6, D)
    lin("c_rel_compress", 17, D)
    return sd


def upstream_detector_state(seed: int = 1):
    torch.manual_seed(seed)
    net = AGFasterRCNN(blocks=(1, 1, 1, 1), width=W)
    with torch.no_grad():
        net.RCNN_cls_score.weight.normal_(0, 0.3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state.update({k[:-len("running_mean")] + "num_batches_tracked": torch.tensor(5)
                  for k in list(state) if k.endswith("running_mean")})
    return state


def tiny_opts(mode):
    return ["MODEL.AG_DETECTOR.BLOCKS", "(1, 1, 1, 1)", "MODEL.AG_DETECTOR.WIDTH", str(W),
            "MODEL.STTRAN.UNION_DIM", str(U), "MODEL.STTRAN.VISUAL_DIM", str(V), "MODEL.STTRAN.EMBED_DIM", str(E),
            "MODEL.STTRAN.DIM_FEEDFORWARD", str(FF), "MODEL.STTRAN.OBJ_CLASSIFIER_HIDDEN", str(H),
            "MODEL.STTRAN.POS_DIM", str(POS), "MODEL.STTRAN.ENC_LAYERS", str(ENC), "MODEL.STTRAN.DEC_LAYERS",
            str(DEC), "TEST.RELATION.MODE", mode, "MODEL.DEVICE", "cpu"]


def build_sgg(mode):
    cfg = get_cfg()
    cfg.merge_from_file(f"configs/action_genome/sttran_{mode}.yaml")
    cfg.merge_from_list(tiny_opts(mode))
    return build_model(cfg).eval()


def converted(mode="sgcls"):
    a = convert_sttran(upstream_sttran_state(), source="sttran.tar")
    b = convert_ag_detector(upstream_detector_state(), source="faster_rcnn_ag.pth")
    assert not a.unmapped and not b.unmapped
    return {**a.state_dict, **b.state_dict}


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_upstream_layout_loads_with_nothing_missing(mode):
    model = build_sgg(mode)
    result = model.load_state_dict(converted(), strict=False)
    assert result.missing_keys == []
    unexpected = set(result.unexpected_keys)
    assert unexpected == ({k for k in converted() if k.startswith("object_classifier.")} if mode == "predcls"
                          else set())


# ------------------------------------------------------------------------------ restatements of the upstream forward
def _draw_union_boxes(pairs, size=27):
    """lib/draw_rectangles/draw_rectangles.pyx restated."""
    out = np.zeros((len(pairs), 2, size, size), np.float32)
    for n, p in enumerate(pairs):
        x1u, y1u, x2u, y2u = min(p[0], p[4]), min(p[1], p[5]), max(p[2], p[6]), max(p[3], p[7])
        for i in range(2):
            bx = [(p[4 * i + k] - (x1u if k % 2 == 0 else y1u)) * size / ((x2u - x1u) if k % 2 == 0 else
                                                                          (y2u - y1u)) for k in range(4)]
            for j in range(size):
                yc = min(max(j + 1 - bx[1], 0), 1) * min(max(bx[3] - j, 0), 1)
                for k in range(size):
                    out[n, i, j, k] = min(max(k + 1 - bx[0], 0), 1) * min(max(bx[2] - k, 0), 1) * yc
    return out


def _up_mask_conv(sd, masks):
    x = nn.functional.conv2d(masks, sd["conv.0.weight"], sd["conv.0.bias"], stride=2, padding=3).relu()
    x = nn.functional.batch_norm(x, sd["conv.2.running_mean"], sd["conv.2.running_var"], sd["conv.2.weight"],
                                 sd["conv.2.bias"])
    x = nn.functional.max_pool2d(x, 3, 2, 1)
    x = nn.functional.conv2d(x, sd["conv.4.weight"], sd["conv.4.bias"], padding=1).relu()
    return nn.functional.batch_norm(x, sd["conv.6.running_mean"], sd["conv.6.running_var"], sd["conv.6.weight"],
                                    sd["conv.6.bias"])


def _mha(sd, p, q, k, v, pad):
    """nn.MultiheadAttention (seq-first) with upstream's weights."""
    return nn.functional.multi_head_attention_forward(
        q, k, v, D, 8, sd[p + "in_proj_weight"], sd[p + "in_proj_bias"], None, None, False, 0.0,
        sd[p + "out_proj.weight"], sd[p + "out_proj.bias"], training=False, key_padding_mask=pad,
        need_weights=False)[0]


def _ln(sd, p, x):
    return nn.functional.layer_norm(x, (D,), sd[p + ".weight"], sd[p + ".bias"])


def _ffn(sd, p, x):
    return nn.functional.linear(nn.functional.linear(x, sd[p + "linear1.weight"], sd[p + "linear1.bias"]).relu(),
                                sd[p + "linear2.weight"], sd[p + "linear2.bias"])


def _up_transformer(sd, features, im_idx):
    """lib/transformer.py's transformer.forward (mode 'latter', window 2) restated with loops."""
    b = int(im_idx[-1]) + 1
    counts = [int((im_idx == i).sum()) for i in range(b)]
    length = max(counts)
    x = torch.zeros(length, b, D)
    pad = torch.ones(b, length, dtype=torch.bool)
    for i in range(b):
        x[:counts[i], i] = features[im_idx == i]
        pad[i, :counts[i]] = False
    for i in range(ENC):
        p = f"glocal_transformer.local_attention.layers.{i}."
        x = _ln(sd, p + "norm1", x + _mha(sd, p + "self_attn.", x, x, x, pad))
        x = _ln(sd, p + "norm2", x + _ffn(sd, p, x))
    local = x.permute(1, 0, 2).reshape(-1, D)[~pad.reshape(-1)]
    pos_w = sd["glocal_transformer.position_embedding.weight"]
    out = torch.zeros_like(features)
    for j in range(b - 1):
        sel = (im_idx == j) | (im_idx == j + 1)
        g = local[sel][:, None]
        pos = torch.cat([pos_w[0].expand(counts[j], D), pos_w[1].expand(counts[j + 1], D)])[:, None]
        for i in range(DEC):
            p = f"glocal_transformer.global_attention.layers.{i}."
            g = _ln(sd, p + "norm3", g + _mha(sd, p + "multihead2.", g + pos, g + pos, g, None))
            g = g + _ffn(sd, p, g)
        frames = im_idx[sel]
        if j == 0:
            out[im_idx == 0] = g[frames == 0, 0]
        out[im_idx == j + 1] = g[frames == j + 1, 0]
    return out


def test_relation_vector_transformer_and_object_classifier_match_the_restatement():
    sd_up = upstream_sttran_state()
    model = build_sgg("sgcls")
    model.load_state_dict(converted(), strict=False)
    g = torch.Generator().manual_seed(3)
    # 3 frames, boxes in original pixels (scale 1.5), person first in each frame
    frame_idx = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    xy = torch.rand(9, 2, generator=g) * 60
    original = torch.cat([xy, xy + 8 + torch.rand(9, 2, generator=g) * 50], 1)
    boxes = original * 1.5
    labels = torch.tensor([0, 4, 9, 0, 30, 0, 2, 2, 35])
    pairs = torch.tensor([[0, 1], [0, 2], [3, 4], [5, 6], [5, 7], [5, 8]])
    feats = torch.randn(9, F_OBJ, generator=g).relu()
    union = torch.randn(6, C_UNION, 7, 7, generator=g)
    with torch.no_grad():
        rel = model.relation(feats, union, boxes, labels, pairs)
        masks = torch.from_numpy(_draw_union_boxes(torch.cat([original[pairs[:, 0]], original[pairs[:, 1]]],
                                                             1).numpy())) - 0.5
        vr = nn.functional.conv2d(union, sd_up["union_func1.weight"], sd_up["union_func1.bias"]) + \
            _up_mask_conv(sd_up, masks)
        lin = lambda n, x: nn.functional.linear(x, sd_up[n + ".weight"], sd_up[n + ".bias"])  # noqa: E731
        ref = torch.cat([lin("subj_fc", feats[pairs[:, 0]]), lin("obj_fc", feats[pairs[:, 1]]),
                         lin("vr_fc", vr.flatten(1)), sd_up["obj_embed.weight"][labels[pairs[:, 0]] + 1],
                         sd_up["obj_embed2.weight"][labels[pairs[:, 1]] + 1]], 1)
        assert (rel - ref).abs().max() < 1e-4
        im_idx = frame_idx[pairs[:, 1]]
        h = model.transformer(ref, im_idx, 3)
        h_up = _up_transformer(sd_up, ref, im_idx)
        assert (h - h_up).abs().max() < 1e-4
        assert torch.allclose(model.attention_head(h), lin("a_rel_compress", h_up), atol=1e-4)
        assert torch.allclose(model.contacting_head(h), lin("c_rel_compress", h_up), atol=1e-4)
        # object classifier: [feature, distribution @ obj_embed, pos_embed(center_size)] -> decoder_lin, softmax[1:]
        dist = torch.softmax(torch.randn(9, 36, generator=g), 1)
        pos_in = model._box_position(boxes, original, {"images": torch.zeros(1, 3, 1, 1)})
        logits = model.object_classifier(feats, dist, pos_in)
        wh = original[:, 2:] - original[:, :2] + 1.0
        cs = torch.cat([original[:, :2] + 0.5 * wh, wh], 1)
        bnf = lambda n, x: nn.functional.batch_norm(x, sd_up[n + ".running_mean"], sd_up[n + ".running_var"],  # noqa
                                                     sd_up[n + ".weight"], sd_up[n + ".bias"])
        pos = lin("object_classifier.pos_embed.1", bnf("object_classifier.pos_embed.0", cs)).relu()
        x = torch.cat([feats, dist @ sd_up["object_classifier.obj_embed.weight"], pos], 1)
        x = bnf("object_classifier.decoder_lin.1", lin("object_classifier.decoder_lin.0", x)).relu()
        up_logits = lin("object_classifier.decoder_lin.3", x)
        assert torch.allclose(logits.softmax(1), up_logits[:, 1:].softmax(1), atol=1e-5)
        assert math.isclose(float((logits - up_logits[:, 1:]).abs().max()), 0.0, abs_tol=1e-4)


def test_wrong_kind_is_one_clear_error():
    with pytest.raises(WrongCheckpointKindError, match=r"not an STTran relation model .*--from ag_detector"):
        convert_sttran(upstream_detector_state(), source="faster_rcnn_ag.pth")
    with pytest.raises(WrongCheckpointKindError, match=r"faster_rcnn_ag.pth.*--from sttran"):
        convert_ag_detector(upstream_sttran_state(), source="sttran.tar")
    notes = convert_ag_detector(upstream_detector_state(), source="x").notes
    assert any("num_batches_tracked" in n for n in notes)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The two released files, upstream-shaped (tiny), converted by the tool into one checkpoint."""
    d = tmp_path_factory.mktemp("release")
    torch.save({"state_dict": upstream_sttran_state()}, d / "sttran.tar")
    torch.save({"epoch": 3, "model": upstream_detector_state(), "pooling_mode": "align"}, d / "faster_rcnn_ag.pth")
    tool = load_tool("convert_checkpoint")
    code = tool.main(["--from", "sttran", str(d / "sttran.tar"), str(d / "sttran.pth"), "--merge", "ag_detector",
                      str(d / "faster_rcnn_ag.pth")])
    assert code == 0
    return d


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_eval_only_from_a_converted_release(release, tmp_path, mode):
    out = tmp_path / "eval"
    r = run_cli("--config-file", f"configs/action_genome/sttran_{mode}.yaml", "--eval-only",
                "MODEL.WEIGHTS", str(release / "sttran.pth"), "OUTPUT_DIR", str(out),
                "DATASETS.TRAIN", "('demo_ag_train',)", "DATASETS.TEST", "('demo_ag_test',)",
                "INPUT.MIN_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0", *tiny_opts(mode))
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "inference" / "demo_ag_test" / "results.json").read_text())["video_sgg"]
    assert 0 <= results["with/R@20"] <= 100 and math.isfinite(results["no/mR@50"])
    assert "unexpected" not in r.stderr or mode == "predcls"


def test_merge_of_a_wrong_file_is_one_line(release, tmp_path, capsys):
    tool = load_tool("convert_checkpoint")
    code = tool.main(["--from", "sttran", str(release / "sttran.tar"), str(tmp_path / "x.pth"), "--merge",
                      "ag_detector", str(release / "sttran.tar")])
    captured = capsys.readouterr()
    assert code == 2
    assert_one_error_line(SimpleNamespace(stderr=captured.err, stdout=captured.out), "sttran.tar", "--from sttran")
    assert not (tmp_path / "x.pth").exists()
