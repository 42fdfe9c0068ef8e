"""Object tracking over the frames of a video: boxes of every frame -> one track id per box (tracklets).

DSG-DETR (Feng et al., WACV 2023) links the boxes of a video into tracklets before its tracklet transformer; the
trackers here are that step, kept apart from any model so other video models can reuse them.

* :class:`HungarianTracker` — DSG-DETR's tracker. Frames are visited in order; the boxes of a frame are assigned to the
  active tracks by :func:`scipy.optimize.linear_sum_assignment` on a weighted cost

      C = w_class * (1 - cos(one-hot class, track's mean one-hot class))
        + w_feature * (1 - cos(RoI feature, track's mean feature))
        + w_l1 * |cxcywh(box) - cxcywh(track's last box)|_1          (boxes normalised by the frame size)
        + w_giou * (-GIoU(box, track's last box))

  (DSG-DETR: w = 0.5, 1, 1, 0.5). An assigned pair is accepted when its class cost **or** its feature cost is below
  ``accept_threshold`` (0.5); otherwise, and for every box left unassigned, the box starts a new track. A track that
  has not been matched for ``max_age`` frame numbers (AG's original frame numbers; DSG-DETR: 50) is dropped.
* :func:`group_by_class` — DSG-DETR's fallback outside SGCls: one "track" per class label in the whole video.
* :func:`no_tracking` — every box alone (the A/B's "off" arm).

:func:`track_boxes` dispatches on the method name (``MODEL.DSGDETR.TRACKING``: ``"hungarian"`` | ``"class"`` |
``"none"``). All return int64 track ids ``(N,)``, numbered 0, 1, ... in order of first appearance.

:func:`tracking_errors` scores track ids against ground-truth identities (CLEAR-MOT's identity switches and MOTA with
GT boxes as input, plus the purity / completeness of the tracks), for ``tools/benchmark.py track``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from sgg.structures.boxes import box_xyxy_to_cxcywh, generalized_box_iou

__all__ = ["TRACKING_METHODS", "HungarianTracker", "group_by_class", "no_tracking", "track_boxes",
           "tracking_errors"]

logger = logging.getLogger(__name__)

TRACKING_METHODS = ("hungarian", "class", "none")


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between the rows of ``a`` ``(N, D)`` and ``b`` ``(M, D)`` -> ``(N, M)`` (0 = same direction)."""
    a = a / (a.norm(dim=1, keepdim=True) + 1e-12)
    b = b / (b.norm(dim=1, keepdim=True) + 1e-12)
    return 1.0 - a @ b.T


def _renumber(ids: torch.Tensor) -> torch.Tensor:
    """Relabel ids ``(N,)`` to 0, 1, ... in order of first appearance."""
    if len(ids) == 0:
        return ids
    _, first = np.unique(ids.numpy(), return_index=True)
    order = np.argsort(first)
    mapping = {int(ids[first[k]]): rank for rank, k in enumerate(order)}
    return torch.tensor([mapping[int(i)] for i in ids], dtype=torch.long)


@dataclass
class _Track:
    box: torch.Tensor  # (4,) normalised xyxy of the last matched box
    feature_sum: torch.Tensor  # (F,)
    class_sum: torch.Tensor  # (K,) sum of one-hot classes
    count: int
    last_frame: int  # frame number of the last match


class HungarianTracker:
    """DSG-DETR's tracker (see the module docstring): per frame, Hungarian assignment of boxes to active tracks.

    ``__call__(boxes (N, 4) xyxy in [0, 1], frame_idx (N,) frame of each box (frames ascending), labels (N,) class
    per box, features (N, F), frame_numbers (T,) or None) -> track ids (N,) int64 on the CPU``. ``frame_numbers[t]`` is
    the original frame number of frame ``t`` (for ``max_age``); None = the frame index.
    """

    def __init__(self, *, cost_class: float = 0.5, cost_feature: float = 1.0, cost_l1: float = 1.0,
                 cost_giou: float = 0.5, accept_threshold: float = 0.5, max_age: int = 50, num_classes: int = 36):
        """
        Args:
            cost_class / cost_feature / cost_l1 / cost_giou: weights of the four costs (DSG-DETR: 0.5, 1, 1, 0.5).
            accept_threshold: an assignment is kept when its class or feature cosine distance is below it (0.5).
            max_age: a track unmatched for this many frame numbers is dropped (50).
            num_classes: size of the one-hot class vectors.
        """
        weights = (cost_class, cost_feature, cost_l1, cost_giou)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"HungarianTracker: the cost weights (class, feature, L1, GIoU) must be >= 0 and not all "
                             f"0, got {weights} (MODEL.DSGDETR.TRACK_COSTS).")
        if max_age < 1:
            raise ValueError(f"HungarianTracker: max_age must be >= 1 frame numbers, got {max_age} "
                             "(MODEL.DSGDETR.TRACK_MAX_AGE).")
        self.cost_class, self.cost_feature, self.cost_l1, self.cost_giou = (float(w) for w in weights)
        self.accept_threshold = float(accept_threshold)
        self.max_age = int(max_age)
        self.num_classes = int(num_classes)

    def costs(self, boxes: torch.Tensor, classes: torch.Tensor, features: torch.Tensor,
              tracks: Sequence[_Track]) -> Dict[str, torch.Tensor]:
        """The four cost matrices ``(N, M)`` of ``N`` boxes against ``M`` tracks, and their weighted ``total``."""
        t_boxes = torch.stack([t.box for t in tracks])
        t_feats = torch.stack([t.feature_sum / t.count for t in tracks])
        t_class = torch.stack([t.class_sum / t.count for t in tracks])
        out = {"class": _cosine_distance(classes, t_class), "feature": _cosine_distance(features, t_feats),
               "l1": torch.cdist(box_xyxy_to_cxcywh(boxes), box_xyxy_to_cxcywh(t_boxes), p=1),
               "giou": -generalized_box_iou(boxes, t_boxes)}
        out["total"] = (self.cost_class * out["class"] + self.cost_feature * out["feature"]
                        + self.cost_l1 * out["l1"] + self.cost_giou * out["giou"])
        return out

    @torch.no_grad()
    def __call__(self, boxes: torch.Tensor, frame_idx: torch.Tensor, labels: torch.Tensor, features: torch.Tensor,
                 frame_numbers: Optional[Sequence[int]] = None) -> torch.Tensor:
        n = len(boxes)
        if not (len(frame_idx) == len(labels) == len(features) == n):
            raise ValueError(f"HungarianTracker: boxes, frame_idx, labels and features need one row per box, got "
                             f"{n}, {len(frame_idx)}, {len(labels)}, {len(features)}.")
        ids = torch.full((n,), -1, dtype=torch.long)
        if n == 0:
            return ids
        boxes = boxes.detach().float().cpu()
        features = features.detach().float().cpu()
        frame_idx = frame_idx.detach().cpu()
        classes = F.one_hot(labels.detach().cpu().long(), self.num_classes).float()
        if (frame_idx[1:] < frame_idx[:-1]).any():
            raise ValueError("HungarianTracker: boxes must be grouped by frame, frames ascending.")
        num_frames = int(frame_idx.max()) + 1
        numbers = list(range(num_frames)) if frame_numbers is None else [int(x) for x in frame_numbers]
        if len(numbers) < num_frames:
            raise ValueError(f"HungarianTracker: {len(numbers)} frame numbers for {num_frames} frames.")
        tracks: List[_Track] = []
        track_ids: List[int] = []
        next_id = 0
        for t in range(num_frames):
            rows = torch.nonzero(frame_idx == t).squeeze(1)
            if len(rows) == 0:
                continue
            now = numbers[t]
            matched_tracks = set()
            assigned = torch.full((len(rows),), -1, dtype=torch.long)
            if tracks:
                c = self.costs(boxes[rows], classes[rows], features[rows], tracks)
                r_ind, c_ind = linear_sum_assignment(c["total"].numpy())
                for r, k in zip(r_ind.tolist(), c_ind.tolist()):
                    if c["class"][r, k] < self.accept_threshold or c["feature"][r, k] < self.accept_threshold:
                        assigned[r] = k
            for r in range(len(rows)):
                i = int(rows[r])
                k = int(assigned[r])
                if k >= 0:
                    tr = tracks[k]
                    tr.box, tr.last_frame, tr.count = boxes[i], now, tr.count + 1
                    tr.feature_sum = tr.feature_sum + features[i]
                    tr.class_sum = tr.class_sum + classes[i]
                    ids[i] = track_ids[k]
                    matched_tracks.add(k)
                else:
                    tracks.append(_Track(boxes[i], features[i].clone(), classes[i].clone(), 1, now))
                    track_ids.append(next_id)
                    matched_tracks.add(len(tracks) - 1)
                    ids[i] = next_id
                    next_id += 1
            # Expiry: only tracks that were not matched in this frame can age out.
            keep = [k for k, tr in enumerate(tracks) if k in matched_tracks or now - tr.last_frame < self.max_age]
            tracks = [tracks[k] for k in keep]
            track_ids = [track_ids[k] for k in keep]
        return ids


def group_by_class(labels: torch.Tensor) -> torch.Tensor:
    """DSG-DETR's grouping outside SGCls: all boxes of a class in the video form one track. ``(N,) -> (N,)``."""
    return _renumber(labels.detach().cpu().long())


def no_tracking(n: int) -> torch.Tensor:
    """Every box is its own track: ids ``0 .. n - 1``."""
    return torch.arange(n, dtype=torch.long)


def track_boxes(method: str, *, boxes: torch.Tensor, frame_idx: torch.Tensor, labels: torch.Tensor,
                features: torch.Tensor, frame_numbers: Optional[Sequence[int]] = None,
                tracker: Optional[HungarianTracker] = None) -> torch.Tensor:
    """Track ids ``(N,)`` (CPU int64) by ``method`` (one of :data:`TRACKING_METHODS`; ``"hungarian"`` uses
    ``tracker``, default :class:`HungarianTracker` with DSG-DETR's settings)."""
    if method == "hungarian":
        return (tracker or HungarianTracker())(boxes, frame_idx, labels, features, frame_numbers)
    if method == "class":
        return group_by_class(labels)
    if method == "none":
        return no_tracking(len(boxes))
    raise ValueError(f"Unknown tracking method {method!r}; expected one of {TRACKING_METHODS} "
                     "(MODEL.DSGDETR.TRACKING).")


def tracking_errors(pred_ids: Sequence[int], gt_ids: Sequence[int], frame_idx: Sequence[int]) -> Dict[str, float]:
    """CLEAR-MOT identity errors of predicted track ids against GT identities when the tracker was given the GT boxes.

    ``pred_ids``, ``gt_ids``, ``frame_idx`` ``(N,)``: one row per box. As in CLEAR-MOT a track may cover one object per
    frame: when several boxes of a frame carry the same predicted id (a merged track, e.g. grouping by class), the one
    continuing that track's previous object is matched (else the first) and every other one counts as a miss and a
    false positive (``conflicts``). An identity switch is counted when a matched object's track differs from the one
    it had when last matched. ``mota = 1 - (misses + false positives + switches) / boxes``. Also returned: ``purity``
    (share of boxes whose track's majority object is theirs: low = tracks merge objects), ``completeness`` (share of
    boxes whose object's majority track is theirs: low = objects are split), ``fragmentations`` (extra track ids per
    object, summed) and the counts.
    """
    pred = np.asarray(pred_ids, np.int64)
    gt = np.asarray(gt_ids, np.int64)
    frames = np.asarray(frame_idx, np.int64)
    if not (len(pred) == len(gt) == len(frames)):
        raise ValueError(f"tracking_errors: {len(pred)} predicted ids, {len(gt)} GT ids, {len(frames)} frame indices.")
    n = len(pred)
    if n == 0:
        return {"boxes": 0, "gt_objects": 0, "pred_tracks": 0, "id_switches": 0, "conflicts": 0, "mota": 1.0,
                "purity": 1.0, "completeness": 1.0, "fragmentations": 0}
    last_track: Dict[int, int] = {}  # GT object -> track it was last matched to
    last_object: Dict[int, int] = {}  # track -> GT object it last covered
    switches = conflicts = 0
    for f in np.unique(frames):
        rows = np.nonzero(frames == f)[0]
        matched: Dict[int, int] = {}  # track -> row matched in this frame
        for r in rows:  # a track continuing its previous object keeps it
            p, g = int(pred[r]), int(gt[r])
            if p not in matched and last_object.get(p) == g:
                matched[p] = r
        for r in rows:
            p = int(pred[r])
            if p not in matched:
                matched[p] = r
            elif matched[p] != r:
                conflicts += 1
        for p, r in matched.items():
            g = int(gt[r])
            if g in last_track and last_track[g] != p:
                switches += 1
            last_track[g] = p
            last_object[p] = g

    def majority_share(key: np.ndarray, value: np.ndarray) -> float:
        good = 0
        for k in np.unique(key):
            _, counts = np.unique(value[key == k], return_counts=True)
            good += int(counts.max())
        return good / n

    frag = sum(len(np.unique(pred[gt == g])) - 1 for g in np.unique(gt))
    return {"boxes": n, "gt_objects": int(len(np.unique(gt))), "pred_tracks": int(len(np.unique(pred))),
            "id_switches": int(switches), "conflicts": int(conflicts),
            "mota": 1.0 - (2 * conflicts + switches) / n, "purity": majority_share(pred, gt),
            "completeness": majority_share(gt, pred), "fragmentations": int(frag)}
