"""``EASGMapper``: an EASG graph dict -> model input (features as tensors, frames decoded and resized, boxes in pixels).

Output of ``mapper(graph_dict)`` (a new dict; the dataset dict is not modified)::

    {**graph_dict,
     "object_labels": int64 (N,)                  the graph's object classes (GT; models of edgecls use them),
     "relation_targets": float32 (N, R)           multi-hot relations of each object (R = len(relationships.txt)),
     "verb_feature": float32 (D_v,)               when the dataset has verb_features.pt,
     "roi_features": [float32 (n_j, D_o)] * N     every RoI feature of object j (all rows, all frames), when present,
     "roi_frame_features": float32 (F, N, D_o), "roi_frame_mask": bool (F, N)
                                                  per frame the mean RoI feature of each object (mask: object in frame),
     # with INPUT.EASG.LOAD_FRAMES and frames on disk:
     "images": uint8 (F, 3, H', W'), "image_size": (H', W'),
     "box_index": int64 (B, 2) [frame, object], "gt_boxes": float32 (B, 4) xyxy pixels of the resized frames}

``F`` = the graph's frame types that hold a box (PRE / PNR / POST order). Boxes are clipped to the frame (EASG's boxes
poke out of [0, 1] a little). There is no horizontal flip: it would swap the meaning of ``left_hand`` /
``right_hand``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from sgg.config import configurable
from sgg.utils.errors import FileReadError, MissingFileError, one_line

from .build import MAPPER_REGISTRY
from .video_mapper import resized_shape

__all__ = ["EASGMapper"]

logger = logging.getLogger(__name__)


@MAPPER_REGISTRY.register()
class EASGMapper:
    """Prepares one EASG graph for a model; see the module docstring."""

    @configurable
    def __init__(self, *, num_relations: int, load_frames: bool, min_size: int, max_size: int):
        """
        Args:
            num_relations: width of ``relation_targets`` (0 = one more than the largest relation index seen).
            load_frames: decode the graph's jpg frames (models that read pixels need them; the linear baseline not).
            min_size / max_size: resized short side / cap on the long side in pixels.
        """
        self.num_relations = int(num_relations)
        self.load_frames = bool(load_frames)
        self.min_size, self.max_size = int(min_size), int(max_size)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """``MODEL.EASG.NUM_RELATIONS``, ``INPUT.EASG.LOAD_FRAMES``, ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``."""
        return {"num_relations": cfg.MODEL.EASG.NUM_RELATIONS, "load_frames": cfg.INPUT.EASG.LOAD_FRAMES,
                "min_size": cfg.INPUT.MIN_SIZE_TEST, "max_size": cfg.INPUT.MAX_SIZE_TEST}

    def _read(self, path: str, graph_id: str) -> np.ndarray:
        if not path:
            raise MissingFileError(f"EASG graph '{graph_id}': no frames/ folder under the dataset root; extract the "
                                   "frames to <root>/frames/<graph_uid>/<clip_uid>_{pre,pnr,post}.jpg or set "
                                   "INPUT.EASG.LOAD_FRAMES False (feature-only models).")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise MissingFileError(f"Frame '{path}' of EASG graph '{graph_id}' not found; the frames/ folder is "
                                   "incomplete (docs/easg.md).") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise FileReadError(f"Frame '{path}' of EASG graph '{graph_id}' cannot be decoded ({one_line(e)}); the "
                                "file is truncated or corrupt.") from None

    def __call__(self, graph: dict) -> dict:
        """Map one graph dict (see the module docstring for the output)."""
        objects, frames = graph["objects"], graph["frames"]
        out = dict(graph)
        num_rel = self.num_relations or 1 + max(r for o in objects for r in o["relations"])
        targets = torch.zeros(len(objects), num_rel)
        for j, o in enumerate(objects):
            if max(o["relations"]) >= num_rel:
                raise ValueError(f"EASG graph '{graph['graph_id']}': relation index {max(o['relations'])} >= "
                                 f"MODEL.EASG.NUM_RELATIONS {num_rel}; set it to len(relationships.txt).")
            targets[j, o["relations"]] = 1.0
        out["object_labels"] = torch.tensor([o["category_id"] for o in objects], dtype=torch.int64)
        out["relation_targets"] = targets
        if graph.get("verb_feature") is not None:
            out["verb_feature"] = torch.as_tensor(graph["verb_feature"], dtype=torch.float32)
        if objects and "roi_features" in objects[0]:
            per_obj = [np.concatenate(list(o["roi_features"].values())) for o in objects]
            out["roi_features"] = [torch.from_numpy(np.ascontiguousarray(f, np.float32)) for f in per_obj]
            dim = per_obj[0].shape[-1]
            frame_feats = torch.zeros(len(frames), len(objects), dim)
            mask = torch.zeros(len(frames), len(objects), dtype=torch.bool)
            for t, fr in enumerate(frames):
                for j, o in enumerate(objects):
                    f = o["roi_features"].get(fr["frame_type"])
                    if f is not None and len(f):
                        frame_feats[t, j] = torch.from_numpy(np.asarray(f, np.float32)).mean(0)
                        mask[t, j] = True
            out["roi_frame_features"], out["roi_frame_mask"] = frame_feats, mask
        if self.load_frames:
            images = [self._read(fr["file_name"], graph["graph_id"]) for fr in frames]
            h, w = images[0].shape[:2]
            if any(im.shape != images[0].shape for im in images):
                raise ValueError(f"EASG graph '{graph['graph_id']}': its frames differ in size "
                                 f"{[im.shape[:2] for im in images]}; all frames of a clip must share one size.")
            new_h, new_w, _ = resized_shape(h, w, self.min_size, self.max_size)
            if (new_h, new_w) != (h, w):
                images = [np.asarray(Image.fromarray(im).resize((new_w, new_h), Image.BILINEAR)) for im in images]
            index, boxes = [], []
            scale = np.array([new_w, new_h, new_w, new_h], np.float32)
            for t, fr in enumerate(frames):
                for j, o in enumerate(objects):
                    b = o["boxes"].get(fr["frame_type"])
                    if b is None:
                        continue
                    for row in np.clip(np.asarray(b, np.float32).reshape(-1, 4), 0.0, 1.0) * scale:
                        index.append((t, j))
                        boxes.append(row)
            out["images"] = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            out["image_size"] = (new_h, new_w)
            out["box_index"] = torch.tensor(index, dtype=torch.int64).reshape(-1, 2)
            out["gt_boxes"] = torch.from_numpy(np.stack(boxes) if boxes else np.zeros((0, 4), np.float32))
        return out
