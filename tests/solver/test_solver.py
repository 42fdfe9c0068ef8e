"""Optimizer param groups (LR multipliers, weight decay rules) and LR schedules."""

import math

import pytest
import torch
from torch import nn

from sgg.config import get_cfg
from sgg.solver import build_lr_scheduler, build_optimizer


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        self.head = nn.Linear(2, 1)


def _lr_of(opt, param):
    return next(g["lr"] for g in opt.param_groups if any(p is param for p in g["params"]))


def test_backbone_multiplier_and_norm_weight_decay():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1e-4", "SOLVER.BACKBONE_MULTIPLIER", "0.1", "SOLVER.WEIGHT_DECAY", "1e-4",
                         "SOLVER.WARMUP_ITERS", "0"])
    net = _Net()
    opt = build_optimizer(cfg, net)
    assert _lr_of(opt, net.backbone[0].weight) == pytest.approx(1e-5)
    assert _lr_of(opt, net.head.weight) == pytest.approx(1e-4)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd[id(net.backbone[1].weight)] == 0.0 and wd[id(net.head.weight)] == 1e-4
    assert isinstance(opt, torch.optim.AdamW)


def test_warmup_multistep_schedule():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1.0", "SOLVER.WARMUP_ITERS", "10", "SOLVER.WARMUP_FACTOR", "0.1",
                         "SOLVER.STEPS", "(20, 30)", "SOLVER.GAMMA", "0.5", "SOLVER.MAX_ITER", "40"])
    opt = build_optimizer(cfg, _Net())
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.55)
    assert lrs[10] == lrs[19] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.5) and lrs[30] == pytest.approx(0.25)


def test_cosine_schedule_and_state_roundtrip():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "2.0", "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR",
                         "SOLVER.MAX_ITER", "100", "SOLVER.WARMUP_ITERS", "0"])
    opt = build_optimizer(cfg, _Net())
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(50):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    state = sched.state_dict()
    opt2 = build_optimizer(cfg, _Net())
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1.0)
    for _ in range(50):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(opt.param_groups[0]["lr"])


def test_plateau_reduces_after_patience():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1.0", "SOLVER.LR_SCHEDULER_NAME", "WarmupPlateau",
                         "SOLVER.WARMUP_ITERS", "0", "SOLVER.PLATEAU.PATIENCE", "1", "SOLVER.PLATEAU.FACTOR", "0.5"])
    opt = build_optimizer(cfg, _Net())
    sched = build_lr_scheduler(cfg, opt)
    assert [sched.report_metric(v) for v in (0.3, 0.4, 0.39, 0.38, 0.5)] == [False, False, False, True, False]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_unknown_optimizer_and_schedule_names():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "Adam"])
    with pytest.raises(ValueError, match="choose 'AdamW' or 'SGD'"):
        build_optimizer(cfg, _Net())
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.LR_SCHEDULER_NAME", "Linear"])
    with pytest.raises(ValueError, match="unknown; choose from"):
        build_lr_scheduler(cfg, build_optimizer(cfg, _Net()))
