"""DefaultTrainer wiring of model-requested hooks and EMA: the tiny text-to-video model trained by the real trainer
writes OUTPUT_DIR/diffusers/final with the EMA UNet weights."""

import itertools

import torch

from sgg.engine import DefaultTrainer
from sgg.engine.ema import EMAHook
from tests.modeling.t2v_tiny import tiny_batch, tiny_t2v_cfg


class _Trainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg, *, seed, start_batch=0):
        return itertools.repeat(tiny_batch())


def test_default_trainer_runs_ema_and_diffusers_export(tmp_path):
    from diffusers import UNet3DConditionModel

    cfg = tiny_t2v_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
                         "SOLVER.BASE_LR", "0.01", "MODEL.EMA.ENABLED", "True", "MODEL.EMA.PREFIX", "unet.",
                         "MODEL.EMA.DECAY", "0.5", "MODEL.EMA.WARMUP", "False", "DATALOADER.NUM_WORKERS", "0"])
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
