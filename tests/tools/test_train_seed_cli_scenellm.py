"""tools/train.py with -model scenellm: the issue's seed command, the stage flags -> MODEL.SCENELLM / SOLVER.STAGE2,
-llm_lr -> the LLM's LR multiplier, m3sgg's SceneLLM flags, refusals."""

import pytest

from sgg.data.catalog import DatasetCatalog
from tests.tools.test_train_seed_cli import overrides, train


def test_seed_command_maps_and_loads():
    plan = train.translate(["-model", "scenellm", "-mode", "predcls", "-data_path", "demo", "-lr", "5e-5",
                            "-llm_lr", "1e-6", "-freeze_llm_epochs", "10"])
    assert plan["config_file"].endswith("configs/quick/scenellm_demo.yaml")
    o = dict(plan["overrides"])
    assert o["MODEL.META_ARCHITECTURE"] == "SceneLLM" and o["SOLVER.BASE_LR"] == 5e-5
    videos = len(DatasetCatalog.get("demo_ag_train"))
    assert plan["num_videos"] == videos
    assert o["MODEL.SCENELLM.TRAINING_STAGE"] == "stage1" and o["SOLVER.STAGE2.ENABLED"] is True
    assert o["SOLVER.STAGE2.START_ITER"] == 10 * videos and o["SOLVER.STAGE2.UNFREEZE"] == ("llm.*lora_*",)
    assert o["SOLVER.STAGE2.LR_FACTOR"] == 1.0
    cfg = train.load_config(plan["config_file"], plan["overrides"], plan["opts"])
    multipliers = {str(p): float(m) for p, m in cfg.SOLVER.LR_MULTIPLIERS}
    assert multipliers == {"llm": pytest.approx(1e-6 / 5e-5)}  # replaces the demo's own llm entry
    assert cfg.SOLVER.STAGE2.START_ITER == 10 * videos and list(cfg.SOLVER.STAGE2.UNFREEZE) == ["llm.*lora_*"]
    for mode in ("sgcls", "sgdet"):
        assert train.translate(["-model", "scenellm", "-mode", mode, "-data_path", "demo"])["config_file"].endswith(
            f"configs/quick/scenellm_{mode}_demo.yaml")
    full = train.translate(["-model", "scenellm", "-mode", "sgdet", "-data_path", "/data/ag"])
    assert full["config_file"].endswith("configs/action_genome/scenellm_sgdet.yaml")


def test_stage_flags():
    o = overrides(["-model", "scenellm", "-data_path", "demo", "-scenellm_training_stage", "vqvae"])
    assert o["MODEL.SCENELLM.TRAINING_STAGE"] == "vqvae" and o["SOLVER.STAGE2.ENABLED"] is False
    o = overrides(["-model", "scenellm", "-data_path", "demo", "-freeze_llm_epochs", "0"])
    assert o["MODEL.SCENELLM.TRAINING_STAGE"] == "stage2" and o["SOLVER.STAGE2.ENABLED"] is False
    o = overrides(["-model", "scenellm", "-data_path", "demo", "-llm_name", "/models/gemma", "-embed_dim", "128",
                   "-codebook_size", "1024", "-commitment_cost", "0.5", "-lora_r", "8", "-lora_alpha", "16",
                   "-lora_dropout", "0.1"])
    assert o["MODEL.SCENELLM.LLM_PATH"] == "/models/gemma" and o["MODEL.SCENELLM.CODE_DIM"] == 128
    assert o["MODEL.SCENELLM.CODEBOOK_SIZE"] == 1024 and o["MODEL.SCENELLM.COMMITMENT_COST"] == 0.5
    assert (o["MODEL.SCENELLM.LORA_R"], o["MODEL.SCENELLM.LORA_ALPHA"], o["MODEL.SCENELLM.LORA_DROPOUT"]) == \
        (8, 16.0, 0.1)
    assert "MODEL.SCENELLM.TRAINING_STAGE" not in o  # the config's own stage schedule is kept


@pytest.mark.parametrize("argv, message", [
    (["-model", "sttran", "-llm_lr", "1e-6"], "-llm_lr configure(s) SceneLLM"),
    (["-model", "tempura", "-scenellm_training_stage", "stage1"], "configure(s) SceneLLM"),
    (["-model", "scenellm", "-scenellm_training_stage", "vqvae", "-freeze_llm_epochs", "2"], "Drop one of them"),
    (["-model", "scenellm", "-freeze_llm_epochs", "-1"], "-freeze_llm_epochs must be >= 0"),
    (["-model", "scenellm", "-data_path", "demo", "-lr", "0", "-llm_lr", "1e-6"], "give -lr > 0"),
])
def test_refusals(argv, message, capsys):
    assert train.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
