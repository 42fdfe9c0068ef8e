"""Registers the demo dataset names. Each reads its generated files through the real dataset's loader and generates
them under ``$SGG_DATASETS/demo/`` on first use:

* ``demo_vg_{train,val,test}``, ``demo_synthetic_{train,test}`` — Visual Genome's h5/json layout;
* ``demo_ag_{train,test}`` — Action Genome's pickles and frame folders;
* ``demo_tvsum`` (+ folds, ``demo_tvsum_raw*``) — the eccv16 TVSum h5 and raw videos;
* ``demo_ssv2_{train,validation}`` — Something-Something V2's json + webm layout;
* ``demo_easg_{train,val}`` — EASG's txt / pkl / feature files and frame folders.
"""

from __future__ import annotations

import functools
import os

from ..catalog import datasets_root
from ..datasets.action_genome import register_action_genome_split
from ..datasets.easg import EASG_SPLITS, register_easg_split
from ..datasets.ssv2 import SSV2_SPLITS, register_ssv2
from ..datasets.tvsum import TVSUM_H5, TVSUM_SPLITS, register_keyframe_family
from ..datasets.visual_genome import register_vg_format_dataset
from .action_genome_demo import DEMO_VARIANTS, ensure_demo_action_genome
from .easg_demo import ensure_easg_demo
from .ssv2_demo import ensure_ssv2_demo
from .tvsum_demo import ensure_tvsum_demo
from .visual_genome_demo import demo_num_val_images, demo_root, ensure_demo_dataset

__all__ = ["register_demo_datasets"]


def _register_vg_demos() -> None:
    for style, splits in (("vg", ("train", "val", "test")), ("synthetic", ("train", "test"))):
        root_fn = functools.partial(demo_root, datasets_root, style)
        prepare = functools.partial(ensure_demo_dataset, datasets_root, style)
        num_val = functools.partial(demo_num_val_images, style)
        for split in splits:
            register_vg_format_dataset(f"demo_{style}_{split}", root_fn=root_fn, split=split,
                                       num_val_images=num_val, prepare=prepare)


def register_demo_datasets() -> None:
    """Register every ``demo_*`` name (called once, when ``sgg.data`` is imported)."""
    _register_vg_demos()
    for variant in DEMO_VARIANTS:
        for split in ("train", "test"):
            # ensure_demo_action_genome() generates on first use and returns the root.
            name = f"demo_ag_{variant}_{split}" if variant else f"demo_ag_{split}"
            register_action_genome_split(name, split, functools.partial(ensure_demo_action_genome, variant=variant))
    register_keyframe_family("demo_tvsum", lambda: os.path.join(datasets_root(), "demo", "tvsum"), h5_name=TVSUM_H5,
                             splits_name=TVSUM_SPLITS, f1_reduction="avg", raw=True, prepare=ensure_tvsum_demo)
    for split in SSV2_SPLITS:
        register_ssv2(f"demo_ssv2_{split}", lambda: os.path.join(datasets_root(), "demo", "ssv2"), split,
                      prepare=ensure_ssv2_demo)
    for split in EASG_SPLITS:
        register_easg_split(f"demo_easg_{split}", split, functools.partial(ensure_easg_demo, datasets_root))


register_demo_datasets()
