"""sgg.engine.hooks.DiffusersExportHook on a tiny text-to-video model, and its wiring in DefaultTrainer.build_hooks:
registered iff MODEL.T2V.EXPORT_DIFFUSERS; the real trainer with EMA writes OUTPUT_DIR/diffusers/final with the EMA
UNet weights."""

import itertools
import os

import pytest
import torch

from sgg.config import get_cfg
from sgg.engine import DefaultTrainer
from sgg.engine.ema import EMAHook
from sgg.engine.hooks import DiffusersExportHook, PeriodicCheckpointer, PeriodicWriter
from sgg.engine.train_loop import SimpleTrainer
from tests.modeling.t2v_tiny import tiny_batch, tiny_t2v_cfg, tiny_t2v_model


class _Trainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg, *, seed, start_batch=0):
        return itertools.repeat(tiny_batch())


def test_diffusers_export_hook_writes_ema_unet(tmp_path):
    from diffusers import UNet3DConditionModel

    model = tiny_t2v_model()
    ema = EMAHook(decay=0.5, prefix="unet.", warmup=False)
    export = DiffusersExportHook(output_dir=str(tmp_path / "diffusers"), period=2)
    trainer = SimpleTrainer(model, itertools.repeat(tiny_batch()),
                            torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2))
    trainer.register_hooks([ema, export])
    trainer.train(0, 3)
    assert sorted(os.listdir(tmp_path / "diffusers")) == ["checkpoint-2", "final"]
    unet = UNet3DConditionModel.from_pretrained(str(tmp_path / "diffusers" / "final"), subfolder="unet")
    saved = unet.state_dict()
    shadow = ema.ema.state_dict(relative=True)
    assert all(torch.equal(saved[k], v) for k, v in shadow.items())
    # The exported weights are the average, not the live weights.
    assert not torch.equal(saved["conv_in.weight"], model.unet.conv_in.weight.detach())


def test_export_diffusers_is_off_by_default():
    assert get_cfg().MODEL.T2V.EXPORT_DIFFUSERS is False


@pytest.mark.parametrize("export", [False, True])
def test_build_hooks_adds_the_export_hook_iff_config_asks(tmp_path, export):
    cfg = tiny_t2v_cfg(**{"OUTPUT_DIR": str(tmp_path), "MODEL.T2V.EXPORT_DIFFUSERS": export})
    kinds = [type(h) for h in _Trainer(cfg).hooks]
    assert kinds.count(DiffusersExportHook) == int(export)
    if export:  # exports follow the checkpoint of the same iteration; writers come last
        position = kinds.index(DiffusersExportHook)
        assert kinds.index(PeriodicCheckpointer) < position < kinds.index(PeriodicWriter)


def test_default_trainer_runs_ema_and_diffusers_export(tmp_path):
    from diffusers import UNet3DConditionModel

    cfg = tiny_t2v_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
                         "SOLVER.BASE_LR", "0.01", "MODEL.EMA.ENABLED", "True", "MODEL.EMA.PREFIX", "unet.",
                         "MODEL.EMA.DECAY", "0.5", "MODEL.EMA.WARMUP", "False", "DATALOADER.NUM_WORKERS", "0",
                         "MODEL.T2V.EXPORT_DIFFUSERS", "True"])
    trainer = _Trainer(cfg)
    ema = [h for h in trainer.hooks if isinstance(h, EMAHook)]
    assert len(ema) == 1
    trainer.resume_or_load(resume=False)
    trainer.train()
    exported = UNet3DConditionModel.from_pretrained(str(tmp_path / "diffusers" / "final"), subfolder="unet")
    shadow = ema[0].ema.state_dict(relative=True)
    live = trainer.model.unet.state_dict()
    name = next(k for k in shadow if not torch.equal(shadow[k], live[k].to(shadow[k].dtype)))
    assert torch.allclose(exported.state_dict()[name], shadow[name].to(exported.state_dict()[name].dtype))
    assert (tmp_path / "model_final.pth").is_file()
