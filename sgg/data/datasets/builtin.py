"""Registers every built-in real dataset name (``vg_*``, ``synthetic_genome_*``, ``ag_*``, ``tvsum*``, ``summe*``,
``ssv2_*``, ``easg_*``) in the catalogs; the demo names are registered by :mod:`sgg.data.demo.builtin`.

Data lives under ``$SGG_DATASETS`` (default ``./datasets``; :func:`sgg.data.catalog.datasets_root`) unless a config
key names a root. Registration is cheap: files are only read when ``DatasetCatalog.get(name)`` is called.
"""

from .action_genome import register_action_genome
from .easg import register_easg
from .ssv2 import register_all_ssv2
from .tvsum import register_all_tvsum
from .visual_genome import register_all_vg

__all__: list = []

register_all_ssv2()
register_all_vg()
register_all_tvsum()
register_action_genome()
register_easg()
