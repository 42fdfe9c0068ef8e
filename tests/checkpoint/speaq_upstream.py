"""The state dict of upstream's ``IterativeRelationDetr`` (mlvlab/SpeaQ, ubc-vision/IterativeSG) built from its
documented layout, and an independent functional re-statement of its forward pass (seq-first, as upstream), for the
converter tests. Nothing here imports upstream code or sgg's model modules."""

import math
from typing import Dict

import torch
from torch.nn import functional as F

STREAMS = ("subject", "object", "relation")
_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(state, prefix, n, g):
    state[f"{prefix}.weight"] = torch.rand(n, generator=g) + 0.5
    state[f"{prefix}.bias"] = torch.randn(n, generator=g) * 0.1
    state[f"{prefix}.running_mean"] = torch.randn(n, generator=g) * 0.1
    state[f"{prefix}.running_var"] = torch.rand(n, generator=g) + 0.5


def _w(g, *shape, scale=None):
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(*shape, generator=g) * (scale if scale is not None else fan_in ** -0.5)


def _mha(state, prefix, d, g, kdim=None):
    if kdim is None or kdim == d:
        state[f"{prefix}.in_proj_weight"] = _w(g, 3 * d, d)
    else:  # nn.MultiheadAttention with kdim/vdim != embed_dim keeps separate projections
        state[f"{prefix}.q_proj_weight"] = _w(g, d, d)
        state[f"{prefix}.k_proj_weight"] = _w(g, d, kdim)
        state[f"{prefix}.v_proj_weight"] = _w(g, d, kdim)
    state[f"{prefix}.in_proj_bias"] = _w(g, 3 * d, scale=0.1)
    state[f"{prefix}.out_proj.weight"] = _w(g, d, d)
    state[f"{prefix}.out_proj.bias"] = _w(g, d, scale=0.1)


def _linear(state, prefix, out_dim, in_dim, g):
    state[f"{prefix}.weight"] = _w(g, out_dim, in_dim)
    state[f"{prefix}.bias"] = _w(g, out_dim, scale=0.1)


def _ln(state, prefix, d, g):
    state[f"{prefix}.weight"] = torch.rand(d, generator=g) + 0.5
    state[f"{prefix}.bias"] = torch.randn(d, generator=g) * 0.1


def upstream_state_dict(*, depth=50, d=32, ffn=64, enc=2, dec=3, queries=6, multiply=2, classes=5, predicates=4,
                        seed=0) -> Dict[str, torch.Tensor]:
    """Random tensors under upstream's exact names and shapes: detectron2 ResNet (``STRIDE_IN_1X1 False``,
    FrozenBN) under ``detr.backbone.0.backbone``, DETR encoder, the three conditioned decoders, the heads, and the
    loss's buffers under ``criterion``."""
    g = torch.Generator().manual_seed(seed)
    s: Dict[str, torch.Tensor] = {}
    bb = "detr.backbone.0.backbone"
    s[f"{bb}.stem.conv1.weight"] = _w(g, 64, 3, 7, 7)
    _bn(s, f"{bb}.stem.conv1.norm", 64, g)
    in_ch = 64
    for stage, blocks in enumerate(_BLOCKS[depth]):
        width, out_ch = 64 * 2 ** stage, 256 * 2 ** stage
        for b in range(blocks):
            p = f"{bb}.res{stage + 2}.{b}"
            if b == 0:
                s[f"{p}.shortcut.weight"] = _w(g, out_ch, in_ch, 1, 1)
                _bn(s, f"{p}.shortcut.norm", out_ch, g)
            s[f"{p}.conv1.weight"] = _w(g, width, in_ch if b == 0 else out_ch, 1, 1)
            _bn(s, f"{p}.conv1.norm", width, g)
            s[f"{p}.conv2.weight"] = _w(g, width, width, 3, 3)
            _bn(s, f"{p}.conv2.norm", width, g)
            s[f"{p}.conv3.weight"] = _w(g, out_ch, width, 1, 1)
            _bn(s, f"{p}.conv3.norm", out_ch, g)
        in_ch = out_ch
    s["detr.input_proj.weight"] = _w(g, d, 2048, 1, 1)
    s["detr.input_proj.bias"] = _w(g, d, scale=0.1)
    s["detr.query_embed.weight"] = torch.randn(queries, d, generator=g)
    s["detr.object_query_embed.weight"] = torch.randn(queries, d, generator=g)
    s["detr.relation_query_embed.weight"] = torch.randn(queries * multiply, d, generator=g)
    t = "detr.transformer"
    for i in range(enc):
        p = f"{t}.encoder.layers.{i}"
        _mha(s, f"{p}.self_attn", d, g)
        _linear(s, f"{p}.linear1", ffn, d, g)
        _linear(s, f"{p}.linear2", d, ffn, g)
        _ln(s, f"{p}.norm1", d, g)
        _ln(s, f"{p}.norm2", d, g)
    for stream in STREAMS:
        for i in range(dec):
            p = f"{t}.decoder.{stream}_layers.{i}"
            _mha(s, f"{p}.self_attn", d, g)
            _mha(s, f"{p}.multihead_attn", d, g)
            _linear(s, f"{p}.linear1", ffn, d, g)
            _linear(s, f"{p}.linear2", d, ffn, g)
            for k in (1, 2, 3):
                _ln(s, f"{p}.norm{k}", d, g)
    _ln(s, f"{t}.decoder.subject_norm", d, g)
    _ln(s, f"{t}.decoder.relation_norm", d, g)
    for i in range(dec):
        _mha(s, f"{t}.decoder.object_pos_attn.{i}", d, g)
        _linear(s, f"{t}.decoder.object_pos_linear.{i}", d, d, g)
        _mha(s, f"{t}.decoder.relation_pos_attn.{i}", d, g, kdim=2 * d)
        _linear(s, f"{t}.decoder.relation_pos_linear.{i}", d, d, g)
    for stream in STREAMS:
        for i in range(dec - 1):
            _mha(s, f"{t}.decoder.{stream}_graph_query_attn.{i}", d, g, kdim=3 * d)
            _linear(s, f"{t}.decoder.{stream}_graph_query_residual.{i}", d, d, g)
            _ln(s, f"{t}.decoder.{stream}_graph_query_norm.{i}", d, g)
    _linear(s, f"{t}.object_embed", classes + 1, d, g)
    for k, (o, i) in enumerate(((d, d), (d, d), (4, d))):
        _linear(s, f"{t}.object_bbox_coords.layers.{k}", o, i, g)
    _linear(s, f"{t}.relation_embed", predicates + 1, d, g)
    s["criterion.empty_weight"] = torch.ones(classes + 1)
    s["criterion.empty_rel_weight"] = torch.ones(predicates + 1)
    return s


# ---------------------------------------------------------------------------- upstream forward, restated
def _frozen_bn(s, p, x):
    scale = s[f"{p}.weight"] * (s[f"{p}.running_var"] + 1e-5).rsqrt()
    shift = s[f"{p}.bias"] - s[f"{p}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def resnet_res5(s, images, depth=50):
    """detectron2's ResNet (``STRIDE_IN_1X1 False``: the stride sits in the 3x3 conv) -> res5 ``(B, 2048, h, w)``."""
    bb = "detr.backbone.0.backbone"
    x = F.relu(_frozen_bn(s, f"{bb}.stem.conv1.norm", F.conv2d(images, s[f"{bb}.stem.conv1.weight"], stride=2,
                                                               padding=3)))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage, blocks in enumerate(_BLOCKS[depth]):
        for b in range(blocks):
            p = f"{bb}.res{stage + 2}.{b}"
            stride = 2 if (b == 0 and stage > 0) else 1
            short = (_frozen_bn(s, f"{p}.shortcut.norm", F.conv2d(x, s[f"{p}.shortcut.weight"], stride=stride))
                     if b == 0 else x)
            y = F.relu(_frozen_bn(s, f"{p}.conv1.norm", F.conv2d(x, s[f"{p}.conv1.weight"])))
            y = F.relu(_frozen_bn(s, f"{p}.conv2.norm", F.conv2d(y, s[f"{p}.conv2.weight"], stride=stride,
                                                                 padding=1)))
            y = _frozen_bn(s, f"{p}.conv3.norm", F.conv2d(y, s[f"{p}.conv3.weight"]))
            x = F.relu(y + short)
    return x


def sine_positions(mask, num_pos_feats):
    """DETR's PositionEmbeddingSine(normalize=True) of a ``(B, h, w)`` padding mask -> ``(B, 2F, h, w)``."""
    not_mask = (~mask).float()
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(num_pos_feats, dtype=torch.float32) // 2) / num_pos_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def _attn(s, p, q, k, v, nhead, key_padding_mask=None):
    sep = f"{p}.q_proj_weight" in s
    return F.multi_head_attention_forward(
        q, k, v, q.shape[-1], nhead, s.get(f"{p}.in_proj_weight"), s[f"{p}.in_proj_bias"], None, None, False, 0.0,
        s[f"{p}.out_proj.weight"], s[f"{p}.out_proj.bias"], training=False, key_padding_mask=key_padding_mask,
        need_weights=False, use_separate_proj_weight=sep, q_proj_weight=s.get(f"{p}.q_proj_weight"),
        k_proj_weight=s.get(f"{p}.k_proj_weight"), v_proj_weight=s.get(f"{p}.v_proj_weight"))[0]


def _layer_norm(s, p, x):
    return F.layer_norm(x, x.shape[-1:], s[f"{p}.weight"], s[f"{p}.bias"])


def _ffn(s, p, x):
    return F.linear(F.relu(F.linear(x, s[f"{p}.linear1.weight"], s[f"{p}.linear1.bias"])),
                    s[f"{p}.linear2.weight"], s[f"{p}.linear2.bias"])


def _decoder_layer(s, p, tgt, memory, pos, query_pos, mask, nhead):
    q = tgt + query_pos
    tgt = _layer_norm(s, f"{p}.norm1", tgt + _attn(s, f"{p}.self_attn", q, q, tgt, nhead))
    tgt = _layer_norm(s, f"{p}.norm2", tgt + _attn(s, f"{p}.multihead_attn", tgt + query_pos, memory + pos, memory,
                                                   nhead, mask))
    return _layer_norm(s, f"{p}.norm3", tgt + _ffn(s, p, tgt))


def upstream_forward(s, images, mask, *, nhead, enc, dec, depth=50):
    """``IterativeRelationDetr``'s network on normalised ``images (B, 3, H, W)`` with the feature-grid padding
    ``mask (B, h, w)`` -> per decoder layer ``{sub,obj,rel}_{logits,boxes}`` ``(B, Qr, .)`` (subject / object outputs
    repeated per relation query, as upstream's ``ONLY_PREDICATE_MULTIPLY``)."""
    t, dd = "detr.transformer", "detr.transformer.decoder"
    src = F.conv2d(resnet_res5(s, images, depth), s["detr.input_proj.weight"], s["detr.input_proj.bias"])
    b, d = src.shape[:2]
    pos = sine_positions(mask, d // 2).flatten(2).permute(2, 0, 1)
    memory = src.flatten(2).permute(2, 0, 1)
    kpm = mask.flatten(1)
    for i in range(enc):
        p = f"{t}.encoder.layers.{i}"
        q = memory + pos
        memory = _layer_norm(s, f"{p}.norm1", memory + _attn(s, f"{p}.self_attn", q, q, memory, nhead, kpm))
        memory = _layer_norm(s, f"{p}.norm2", memory + _ffn(s, p, memory))
    sub_pos, obj_pos0, rel_pos0 = (s[f"detr.{k}.weight"][:, None].repeat(1, b, 1)
                                   for k in ("query_embed", "object_query_embed", "relation_query_embed"))
    m = rel_pos0.shape[0] // sub_pos.shape[0]
    sub_t, obj_t, rel_t = torch.zeros_like(sub_pos), torch.zeros_like(obj_pos0), torch.zeros_like(rel_pos0)
    layers = []
    for i in range(dec):
        sub = _decoder_layer(s, f"{dd}.subject_layers.{i}", sub_t, memory, pos, sub_pos, kpm, nhead)
        cond = _attn(s, f"{dd}.object_pos_attn.{i}", obj_pos0, sub + sub_pos, sub, nhead)
        obj_pos = obj_pos0 + F.linear(cond, s[f"{dd}.object_pos_linear.{i}.weight"],
                                      s[f"{dd}.object_pos_linear.{i}.bias"])
        obj = _decoder_layer(s, f"{dd}.object_layers.{i}", obj_t, memory, pos, obj_pos, kpm, nhead)
        cond = _attn(s, f"{dd}.relation_pos_attn.{i}", rel_pos0, torch.cat([sub + sub_pos, obj + obj_pos], -1),
                     torch.cat([sub, obj], -1), nhead)
        rel_pos = rel_pos0 + F.linear(cond, s[f"{dd}.relation_pos_linear.{i}.weight"],
                                      s[f"{dd}.relation_pos_linear.{i}.bias"])
        rel = _decoder_layer(s, f"{dd}.relation_layers.{i}", rel_t, memory, pos, rel_pos, kpm, nhead)
        hs = {"sub": _layer_norm(s, f"{dd}.subject_norm", sub), "obj": _layer_norm(s, f"{dd}.subject_norm", obj),
              "rel": _layer_norm(s, f"{dd}.relation_norm", rel)}
        out = {}
        for name, h in hs.items():
            head = "relation_embed" if name == "rel" else "object_embed"
            logits = F.linear(h, s[f"{t}.{head}.weight"], s[f"{t}.{head}.bias"]).transpose(0, 1)
            x = h
            for k in range(3):
                x = F.linear(x, s[f"{t}.object_bbox_coords.layers.{k}.weight"],
                             s[f"{t}.object_bbox_coords.layers.{k}.bias"])
                x = F.relu(x) if k < 2 else x
            boxes = x.sigmoid().transpose(0, 1)
            if name != "rel":
                logits, boxes = logits.repeat_interleave(m, 1), boxes.repeat_interleave(m, 1)
            out[f"{name}_logits"], out[f"{name}_boxes"] = logits, boxes
        layers.append(out)
        if i == dec - 1:
            break
        triplet = torch.cat([sub.repeat_interleave(m, 0), obj.repeat_interleave(m, 0), rel], -1)
        triplet_pos = torch.cat([sub_pos.repeat_interleave(m, 0), obj_pos.repeat_interleave(m, 0), rel_pos], -1)
        nxt = []
        for stream, x, p in (("subject", sub, sub_pos), ("object", obj, obj_pos), ("relation", rel, rel_pos)):
            g = _attn(s, f"{dd}.{stream}_graph_query_attn.{i}", x + p, triplet + triplet_pos, triplet, nhead)
            g = F.linear(g, s[f"{dd}.{stream}_graph_query_residual.{i}.weight"],
                         s[f"{dd}.{stream}_graph_query_residual.{i}.bias"])
            nxt.append(x + _layer_norm(s, f"{dd}.{stream}_graph_query_norm.{i}", g))
        sub_t, obj_t, rel_t = nxt
    return layers


def ceil_grid_mask(image_sizes, grid, stride):
    """detectron2 DETR wrapper's feature padding mask: image (h, w) covers ``ceil(h / stride) x ceil(w / stride)``."""
    mask = torch.ones((len(image_sizes), *grid), dtype=torch.bool)
    for i, (h, w) in enumerate(image_sizes):
        mask[i, : math.ceil(h / stride), : math.ceil(w / stride)] = False
    return mask
