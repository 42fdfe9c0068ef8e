"""Registers every built-in dataset name (``vg_*``, ``ag_*``, ``tvsum``, ``demo_*`` ...) in the catalogs.

Data lives under ``$SGG_DATASETS`` (default ``./datasets``). Each dataset file exposes a ``register_*`` function;
this module calls them. Registration is cheap: files are only read when ``DatasetCatalog.get(name)`` is called.
"""

import os

from ..catalog import DatasetCatalog

__all__ = ["datasets_root"]


def datasets_root() -> str:
    """``$SGG_DATASETS`` or ``./datasets``."""
    return os.path.expanduser(os.environ.get("SGG_DATASETS", "datasets"))


# Something-Something V2 (issue 7, text-to-video): ssv2_{train,validation}, demo_ssv2_{train,validation}
from .ssv2 import register_all_ssv2  # noqa: E402

register_all_ssv2(datasets_root)


# Visual Genome format: vg_*, synthetic_genome_*, demo_vg_*, demo_synthetic_* (sgg/data/datasets/visual_genome.py)
from .visual_genome import register_all_vg  # noqa: E402

register_all_vg(datasets_root)


# TVSum / SumMe keyframes (issue 6): tvsum*, tvsum_raw*, summe*, demo_tvsum* (sgg/data/datasets/tvsum.py)
from .tvsum import register_all_tvsum  # noqa: E402

register_all_tvsum(datasets_root)


# Action Genome (issue 5, video SGG): ag_{train,test}, demo_ag_{train,test} (sgg/data/datasets/action_genome.py)
from .action_genome import configure_action_genome, register_action_genome  # noqa: E402

register_action_genome()
DatasetCatalog.register_configurator(configure_action_genome)
