"""Shared pieces of the detectron2 interop tests: the skip marker and a tiny detectron2 R-50-FPN."""

import pytest

from sgg.config.detectron2 import INSTALL_HINT, detectron2_available

requires_detectron2 = pytest.mark.skipif(
    not detectron2_available(),
    reason=f"detectron2 is not installed ({INSTALL_HINT}; .ci/run installs the wheel from ../shared/wheels/)")

# A detectron2 R-50-FPN shrunk for CPU tests: bottleneck width 4 (x1 group), res2 16 channels, stem 8, FPN 16.
TINY_R50_FPN = {
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 16,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 8,
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.OUT_CHANNELS": 16,
}


def sgg_opts(d2_keys, section="MODEL.BACKBONE.D2"):
    """detectron2 keys as an sgg ``merge_from_list`` list under ``section``."""
    return [x for k, v in d2_keys.items() for x in (f"{section}.{k}", v)]
