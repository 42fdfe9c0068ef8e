#!/usr/bin/env python
"""Count STKET's relation priors on a training split and write them as JSON (upstream's ``TrainPrior.json`` layout).

Upstream (HCPLab-SYSU/STKET) uses a prior file but ships neither the file nor the script that makes it; this tool
counts it with :func:`sgg.data.stket_priors.compute_stket_priors` (per object class the marginal ``initial_prior`` and
the next-frame transitions ``specific_prior``, see docs/stket.md). Only training splits are accepted: priors counted
on the test split would leak its labels into the model::

    python tools/compute_stket_priors.py --dataset ag_train --output datasets/action_genome/stket_priors.json
    python tools/compute_stket_priors.py --dataset demo_ag_train --output /tmp/p.json
    python tools/compute_stket_priors.py --dataset ag_train --config-file configs/action_genome/stket_sgcls.yaml \\
        --output p.json                  # the loader's filters of that config (SGCls drops small boxes)

Then ``MODEL.STKET.PRIOR_FILE p.json``. Trailing ``KEY VALUE`` pairs are config overrides (e.g. ``DATASETS.AG.ROOT``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sgg.config import get_cfg  # noqa: E402
from sgg.data.catalog import DatasetCatalog, MetadataCatalog  # noqa: E402
from sgg.data.stket_priors import compute_stket_priors, save_stket_priors, transition_entropy  # noqa: E402
from sgg.utils.errors import SGGError, run_cli  # noqa: E402

__all__ = ["build_parser", "main"]

logger = logging.getLogger("sgg.tools.compute_stket_priors")


class PriorToolError(SGGError, ValueError):
    """A request the tool refuses (a test split, an unknown dataset)."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a registered training split (ag_train, demo_ag_train, ...)")
    p.add_argument("--output", default="", help="JSON file to write (default: ./stket_priors_<dataset>.json)")
    p.add_argument("--config-file", default="", help="config whose DATASETS.AG options (filters, root) apply")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    return p


def _run(args) -> int:
    name = args.dataset
    if name not in DatasetCatalog.list():
        raise PriorToolError(f"--dataset {name}: not a registered dataset; training splits: "
                             f"{sorted(n for n in DatasetCatalog.list() if n.endswith('_train'))}.")
    if not name.endswith("_train"):
        raise PriorToolError(f"--dataset {name}: STKET's priors are counted on a training split only (a name "
                             "ending in '_train', e.g. ag_train); counting on evaluation data leaks its labels.")
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    DatasetCatalog.configure(cfg)
    meta = MetadataCatalog.get(name)
    classes, predicates = meta.get("thing_classes"), meta.get("predicate_classes")
    if not classes or not predicates:
        raise PriorToolError(f"--dataset {name}: its metadata has no thing_classes / predicate_classes; it is not a "
                             "video relation dataset.")
    videos = DatasetCatalog.get(name)
    priors = compute_stket_priors(videos, classes, predicates, tuple(cfg.MODEL.STTRAN.PREDICATE_GROUPS))
    output = args.output or f"stket_priors_{name}.json"
    save_stket_priors(priors, output)
    ent = transition_entropy(priors, tuple(cfg.MODEL.STTRAN.PREDICATE_GROUPS))
    print(f"{name}: {len(videos)} videos, {len(priors)} object classes -> {output}")
    print(f"mean binary entropy per predicate: marginal {ent['marginal_bits']:.4f} bits, transition "
          f"{ent['transition_bits']:.4f} bits over {ent['entries']} (class, contact) entries")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; user errors print one ``error:`` line and return 2."""
    args = build_parser().parse_args(argv)
    return run_cli(_run, args)


if __name__ == "__main__":
    sys.exit(main())
