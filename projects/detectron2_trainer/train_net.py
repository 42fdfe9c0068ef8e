#!/usr/bin/env python
"""Train an sgg model with detectron2's DefaultTrainer (see sgg_trainer.py and docs/detectron2.md).

    python projects/detectron2_trainer/train_net.py --config-file projects/detectron2_trainer/speaq_demo.yaml
    python projects/detectron2_trainer/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from sgg_trainer import SceneGraphTrainer, add_sgg_config  # noqa: E402


def setup(args):
    """detectron2's config with the SGG section, merged from the file and the command line."""
    cfg = get_cfg()
    add_sgg_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = SceneGraphTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return SceneGraphTrainer.test(cfg, model)
    trainer = SceneGraphTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
