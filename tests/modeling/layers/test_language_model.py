"""The local LLM with LoRA: only the adapters train, merge / unmerge round-trip, clear errors for bad paths / dtypes."""

import json

import pytest
import torch

from sgg.config import ConfigError
from sgg.modeling.layers.language_model import LoRALanguageModel, check_llm_dtype
from tests.modeling.scenellm_tiny import make_tiny_llm_tool, tiny_llm_dir


def test_only_the_adapters_of_the_chosen_modules_train():
    llm = LoRALanguageModel(path=tiny_llm_dir(), lora_r=4, lora_alpha=8, lora_dropout=0.0)
    trainable = sorted(n for n, p in llm.named_parameters() if p.requires_grad)
    # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    assert len(trainable) == 8 and all("lora_" in n for n in trainable)
    assert {n.split("self_attn.")[1].split(".")[0] for n in trainable} == {"q_proj", "v_proj"}
    assert len(llm.lora_parameters()) == 8 and llm.hidden_size == 16
    out = llm(torch.randn(3, 16))
    assert out.shape == (3, 16) and out.dtype == torch.float32
    everything = LoRALanguageModel(path=tiny_llm_dir(), lora_r=2, target_modules=("q_proj", "k_proj", "v_proj",
                                                                                   "o_proj"))
    assert sum(p.requires_grad for p in everything.parameters()) == 16
    frozen = LoRALanguageModel(path=tiny_llm_dir(), lora_r=0)
    assert not any(p.requires_grad for p in frozen.parameters()) and frozen.lora_parameters() == []
    with pytest.raises(ConfigError, match="LORA_TARGET_MODULES"):
        LoRALanguageModel(path=tiny_llm_dir(), target_modules=("query",))


def test_merge_and_unmerge_round_trip():
    torch.manual_seed(0)
    llm = LoRALanguageModel(path=tiny_llm_dir(), lora_r=4, lora_alpha=8, lora_dropout=0.0).eval()
    with torch.no_grad():
        for p in llm.lora_parameters():
            p.normal_(0, 0.3)  # lora_B starts at 0: make the adapters do something
    base = {n: p.detach().clone() for n, p in llm.named_parameters() if "base_layer" in n}
    x = torch.randn(5, 16)
    with_adapters = llm(x)
    llm.merge()
    merged = llm(x)
    assert torch.allclose(merged, with_adapters, atol=1e-5)
    assert any(not torch.equal(p, base[n]) for n, p in llm.named_parameters() if n in base)  # folded in
    llm.unmerge()
    for n, p in llm.named_parameters():
        if n in base:
            assert torch.allclose(p, base[n], atol=1e-6), n
    assert torch.allclose(llm(x), with_adapters, atol=1e-5)


def test_missing_or_wrong_llm_path_is_one_clear_line(tmp_path):
    cases = [("", "LLM_PATH is empty"), (str(tmp_path / "nope"), "is not a folder"),
             (str(tmp_path), "has no config.json")]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no_such_model_type"}))
    cases.append((str(bad), "transformers could not load a model"))
    for path, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            LoRALanguageModel(path=path)
        assert "\n" not in str(e.value) and "MODEL.SCENELLM.LLM_PATH" in str(e.value)


def test_dtypes_only_where_the_device_supports_them():
    check_llm_dtype("float32", "cpu")
    check_llm_dtype("bfloat16", "cpu")
    with pytest.raises(ConfigError, match="int8 needs a CUDA device"):
        check_llm_dtype("int8", "cpu")
    with pytest.raises(ConfigError, match="LLM_DTYPE must be one of"):
        check_llm_dtype("float8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no bf16 support"):
            check_llm_dtype("bfloat16", "cuda")
    llm = LoRALanguageModel(path=tiny_llm_dir(), dtype="bfloat16", lora_r=2)
    assert next(llm.model.parameters()).dtype == torch.bfloat16 and llm(torch.randn(2, 16)).dtype == torch.float32


def test_make_tiny_llm_tool(tmp_path, capsys):
    assert make_tiny_llm_tool.main([str(tmp_path / "llm"), "--hidden-size", "10", "--heads", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--heads 3 must divide --hidden-size 10" in err[0]
