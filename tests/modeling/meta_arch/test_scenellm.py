"""SceneLLM on tiny synthetic videos: what each training stage trains and returns, the LLM path feeding the decoder,
the A/B without it, codebook statistics, and one clear line for a missing LLM."""

import pytest
import torch

import sgg.modeling  # noqa: F401  (registers backbones and meta-architectures)
from sgg.config import ConfigError
from sgg.modeling import build_model
from sgg.utils.events import EventStorage
from tests.modeling.meta_arch.test_sttran import check_prediction, make_video, tiny_cfg
from tests.modeling.scenellm_tiny import tiny_llm_dir

VQ = {"loss_vq_reconstruction", "loss_vq_codebook", "loss_vq_commitment"}
REL = {"loss_attention", "loss_spatial", "loss_contacting"}


def scenellm_cfg(mode="predcls", **keys):
    cfg = tiny_cfg(mode)
    cfg.MODEL.META_ARCHITECTURE = "SceneLLM"
    cfg.MODEL.STTRAN.MULTI_LABEL_LOSS = "bce"
    c = cfg.MODEL.SCENELLM
    c.LLM_PATH, c.CODE_DIM, c.CODEBOOK_SIZE, c.LLM_FEATURE_DIM = tiny_llm_dir(), 8, 16, 8
    c.SIA_HEADS, c.OT_ITERS = 2, 10
    c.LORA_R, c.LORA_DROPOUT = 4, 0.0
    for key, value in keys.items():
        setattr(c, key, value)
    return cfg


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stages_train_what_they_say():
    torch.manual_seed(0)
    video = make_video(num_frames=4)
    vqvae = build_model(scenellm_cfg(TRAINING_STAGE="vqvae")).train()
    assert _trainable(vqvae) and all(n.startswith("vqvae.") for n in _trainable(vqvae))
    assert not vqvae.features.training and vqvae.vqvae.training  # fixed features, no BatchNorm updates
    assert set(vqvae([video])) == VQ

    stage1 = build_model(scenellm_cfg(TRAINING_STAGE="stage1")).train()
    names = _trainable(stage1)
    assert not any(n.startswith("llm.") for n in names)  # LLM and adapters frozen ...
    assert {"vqvae.quantizer.codebook.weight", "to_llm.weight", "from_llm.weight", "attention_head.weight"} <= names
    assert any(n.startswith("sia.") for n in names) and any(n.startswith("features.") for n in names)
    losses = stage1([video])
    assert set(losses) == VQ | REL
    sum(losses.values()).backward()
    assert stage1.to_llm.weight.grad.abs().sum() > 0  # ... but the gradient passes through the LLM
    assert stage1.vqvae.encoder[0].weight.grad.abs().sum() > 0  # and reaches the VQ encoder (straight-through)

    stage2 = build_model(scenellm_cfg(TRAINING_STAGE="stage2")).train()
    llm_trainable = {n for n in _trainable(stage2) if n.startswith("llm.")}
    assert len(llm_trainable) == 8 and all("lora_" in n for n in llm_trainable)
    frozen_vq = build_model(scenellm_cfg(TRAINING_STAGE="stage2", FREEZE_VQVAE=True)).train()
    assert not any(n.startswith("vqvae.") for n in _trainable(frozen_vq)) and set(frozen_vq([video])) == REL


def test_llm_path_feeds_the_decoder_and_the_ab_removes_it():
    torch.manual_seed(0)
    video = make_video(num_frames=4)
    model = build_model(scenellm_cfg()).eval()
    rel_dim = model.relation.dim
    assert model.pair_dim == rel_dim + 8
    out = model([video])[0]
    check_prediction(video, out)
    with torch.no_grad():  # the LLM's output changes the relation scores
        for p in model.llm.lora_parameters():
            p.normal_(0, 0.5)
    changed = model([video])[0]
    assert not torch.allclose(changed["frames"][0]["contacting"], out["frames"][0]["contacting"])
    plain = build_model(scenellm_cfg(USE_LLM=False, LLM_PATH="")).eval()
    assert plain.llm is None and not hasattr(plain, "vqvae") and plain.pair_dim == rel_dim
    check_prediction(video, plain([video])[0])
    for mode in ("sgcls", "sgdet"):
        m = build_model(scenellm_cfg(mode)).eval()
        check_prediction(video, m([video])[0])
        assert set(m.train()([video])) >= VQ | REL | {"loss_object"}


def test_codebook_statistics_are_logged_and_counted_in_a_buffer():
    torch.manual_seed(0)
    model = build_model(scenellm_cfg()).train()
    assert "code_counts" in model.state_dict()
    with EventStorage() as storage:
        model([make_video(num_frames=3)])
    boxes = 3 * 3
    assert model.code_counts.sum() == boxes
    latest = storage.latest()
    assert 1.0 <= latest["scenellm/vq_perplexity"][0] <= boxes
    assert latest["scenellm/vq_usage_total"][0] == pytest.approx(float((model.code_counts > 0).sum()) / 16)


def test_missing_llm_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.SCENELLM.LLM_PATH .* is not a folder") as e:
        build_model(scenellm_cfg(LLM_PATH=str(tmp_path / "missing")))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="TRAINING_STAGE must be one of"):
        build_model(scenellm_cfg(TRAINING_STAGE="stage3"))
