"""What :class:`sgg.engine.Predictor` returns: scene graphs of images and videos, and keyframe scores.

All coordinates are ORIGINAL pixels of the input (x0, y0, x1, y1), scores are probabilities in [0, 1], times are
seconds from the start of the video. ``to_dict()`` gives JSON-ready plain Python values; ``triplet_rows()`` one flat
dict per triplet (the rows of ``triplets.csv``).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SceneGraph", "VideoSceneGraph", "KeyframeResult", "TRIPLET_COLUMNS", "KEYFRAME_COLUMNS", "rows_to_csv",
           "result_rows"]

logger = logging.getLogger(__name__)

# Columns of one triplet row (triplets.csv); video rows fill "frame" and "time_s", image rows leave them empty.
TRIPLET_COLUMNS = ("input", "frame", "time_s", "rank", "subject_id", "subject", "subject_score", "predicate",
                   "object_id", "object", "object_score", "score", "uncertainty",
                   "subject_box", "object_box")


# Columns of one keyframe-model row (keyframes.csv): one row per sampled step.
KEYFRAME_COLUMNS = ("input", "step", "frame", "time_s", "score", "keyframe")


def _round_box(box) -> List[float]:
    return [round(float(v), 1) for v in box]


@dataclass
class SceneGraph:
    """One image's (or one video frame's) scene graph.

    Attributes:
        boxes: float32 ``(N, 4)`` object boxes, xyxy, original pixels.
        labels: int64 ``(N,)`` object class indices into ``class_names``.
        scores: float32 ``(N,)`` object confidences in [0, 1].
        triplets: int64 ``(K, 3)`` ``[subject, object, predicate]``; subject / object index ``boxes``, predicate
            indexes ``predicate_names``. Sorted by decreasing ``triplet_scores``.
        triplet_scores: float32 ``(K,)`` in [0, 1]: p(predicate) x subject score x object score.
        uncertainties: float32 ``(K,)`` per-triplet uncertainty where the model predicts one, else None.
        class_names, predicate_names: the dataset's vocabularies.
        image_size: ``(height, width)`` of the input in pixels.
        image: the input, uint8 ``(H, W, 3)`` RGB (kept for drawing; not serialised).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    triplets: np.ndarray
    triplet_scores: np.ndarray
    class_names: Sequence[str]
    predicate_names: Sequence[str]
    image_size: Tuple[int, int]
    uncertainties: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.triplets = np.asarray(self.triplets, dtype=np.int64).reshape(-1, 3)
        self.triplet_scores = np.asarray(self.triplet_scores, dtype=np.float32).reshape(-1)
        if self.uncertainties is not None:
            self.uncertainties = np.asarray(self.uncertainties, dtype=np.float32).reshape(-1)
        n, k = len(self.boxes), len(self.triplets)
        if len(self.labels) != n or len(self.scores) != n:
            raise ValueError(f"SceneGraph: {n} boxes but {len(self.labels)} labels and {len(self.scores)} scores.")
        if len(self.triplet_scores) != k or (self.uncertainties is not None and len(self.uncertainties) != k):
            raise ValueError(f"SceneGraph: {k} triplets but {len(self.triplet_scores)} scores.")
        if k and (self.triplets[:, :2].min() < 0 or self.triplets[:, :2].max() >= n):
            raise ValueError(f"SceneGraph: triplet subject/object indices must be in [0, {n}).")

    @property
    def label_names(self) -> List[str]:
        """The class name of every object."""
        return [self.class_names[int(c)] for c in self.labels]

    def used_objects(self) -> np.ndarray:
        """Indices of the objects that take part in at least one triplet, in increasing order."""
        return np.unique(self.triplets[:, :2]) if len(self.triplets) else np.zeros(0, dtype=np.int64)

    def triplet_rows(self, input_name: str = "", frame: Optional[int] = None,
                     time_s: Optional[float] = None) -> List[Dict]:
        """One flat dict per triplet with the :data:`TRIPLET_COLUMNS` keys (names, scores rounded to 4 digits)."""
        rows = []
        names = self.label_names
        for rank, ((s, o, p), score) in enumerate(zip(self.triplets.tolist(), self.triplet_scores.tolist())):
            rows.append({
                "input": input_name, "frame": "" if frame is None else int(frame),
                "time_s": "" if time_s is None else round(float(time_s), 3), "rank": rank,
                "subject_id": s, "subject": names[s], "subject_score": round(float(self.scores[s]), 4),
                "predicate": self.predicate_names[p],
                "object_id": o, "object": names[o], "object_score": round(float(self.scores[o]), 4),
                "score": round(float(score), 4),
                "uncertainty": "" if self.uncertainties is None else round(float(self.uncertainties[rank]), 4),
                "subject_box": _round_box(self.boxes[s]), "object_box": _round_box(self.boxes[o]),
            })
        return rows

    def to_dict(self) -> Dict:
        """``{image_size, objects: [{id, label, score, box}], triplets: [{subject, predicate, object, score}]}``."""
        names = self.label_names
        objects = [{"id": i, "label": names[i], "score": round(float(self.scores[i]), 4),
                    "box": _round_box(self.boxes[i])} for i in range(len(self.boxes))]
        triplets = []
        for k, ((s, o, p), score) in enumerate(zip(self.triplets.tolist(), self.triplet_scores.tolist())):
            t = {"subject": s, "predicate": self.predicate_names[p], "object": o, "score": round(float(score), 4),
                 "text": f"{names[s]} {self.predicate_names[p]} {names[o]}"}
            if self.uncertainties is not None:
                t["uncertainty"] = round(float(self.uncertainties[k]), 4)
            triplets.append(t)
        return {"image_size": [int(v) for v in self.image_size], "objects": objects, "triplets": triplets}


@dataclass
class VideoSceneGraph:
    """A video's scene graph: one :class:`SceneGraph` per sampled frame.

    Attributes:
        frames: per sampled frame, its scene graph (``image`` holds the frame's pixels when decoded here).
        frame_indices: int64 ``(T,)`` index of every sampled frame in the native stream.
        times: float64 ``(T,)`` timestamps in seconds.
        fps: the sampling rate in frames per second (0 when the frames were given without timing).
    """

    frames: List[SceneGraph]
    frame_indices: np.ndarray
    times: np.ndarray
    fps: float = 0.0

    def __post_init__(self):
        self.frame_indices = np.asarray(self.frame_indices, dtype=np.int64).reshape(-1)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        if not (len(self.frames) == len(self.frame_indices) == len(self.times)):
            raise ValueError(f"VideoSceneGraph: {len(self.frames)} frames, {len(self.frame_indices)} indices and "
                             f"{len(self.times)} times.")

    def __len__(self) -> int:
        return len(self.frames)

    def triplet_rows(self, input_name: str = "") -> List[Dict]:
        """Every frame's :meth:`SceneGraph.triplet_rows`, in frame order."""
        rows = []
        for sg, index, t in zip(self.frames, self.frame_indices.tolist(), self.times.tolist()):
            rows.extend(sg.triplet_rows(input_name, frame=index, time_s=t))
        return rows

    def relation_tracks(self) -> Dict[str, np.ndarray]:
        """``"subject predicate object"`` (class names) -> float32 ``(T,)`` best score of that relation in each
        frame (0 where absent); keys ordered by first appearance, then by decreasing total score."""
        tracks: Dict[str, np.ndarray] = {}
        for t, sg in enumerate(self.frames):
            names = sg.label_names
            for (s, o, p), score in zip(sg.triplets.tolist(), sg.triplet_scores.tolist()):
                key = f"{names[s]} {sg.predicate_names[p]} {names[o]}"
                track = tracks.setdefault(key, np.zeros(len(self.frames), dtype=np.float32))
                track[t] = max(track[t], score)
        return dict(sorted(tracks.items(), key=lambda kv: (int(np.argmax(kv[1] > 0)), -float(kv[1].sum()))))

    def to_dict(self) -> Dict:
        """``{fps, frames: [{frame, time_s, **SceneGraph.to_dict()}]}``."""
        return {"fps": float(self.fps),
                "frames": [{"frame": int(i), "time_s": round(float(t), 3), **sg.to_dict()}
                           for sg, i, t in zip(self.frames, self.frame_indices, self.times)]}


@dataclass
class KeyframeResult:
    """A keyframe model's output on one video.

    Attributes:
        scores: float32 ``(T,)`` importance of every sampled step, in [0, 1].
        frame_indices: int64 ``(T,)`` native frame index of every step.
        times: float64 ``(T,)`` timestamps in seconds.
        keyframes: the selected steps (indices into ``scores``), in temporal order.
        selection: the rule that chose them (``"topk"`` or ``"shots"``) and ``ratio``, the fraction asked for.
        frames: uint8 ``(T, S, S, 3)`` the model's input frames (kept for drawing; not serialised).
    """

    scores: np.ndarray
    frame_indices: np.ndarray
    times: np.ndarray
    keyframes: List[int]
    selection: str = "topk"
    ratio: float = 0.15
    frames: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.frame_indices = np.asarray(self.frame_indices, dtype=np.int64).reshape(-1)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.keyframes = [int(k) for k in self.keyframes]
        if not (len(self.scores) == len(self.frame_indices) == len(self.times)):
            raise ValueError("KeyframeResult: scores, frame_indices and times must have one entry per step.")
        if any(k < 0 or k >= len(self.scores) for k in self.keyframes):
            raise ValueError(f"KeyframeResult: keyframes must index the {len(self.scores)} steps.")

    def to_dict(self) -> Dict:
        """``{selection, ratio, steps: [{step, frame, time_s, score}], keyframes: [step, ...]}``."""
        return {"selection": self.selection, "ratio": float(self.ratio),
                "steps": [{"step": i, "frame": int(f), "time_s": round(float(t), 3), "score": round(float(s), 4)}
                          for i, (f, t, s) in enumerate(zip(self.frame_indices, self.times, self.scores))],
                "keyframes": list(self.keyframes)}

    def rows(self, input_name: str = "") -> List[Dict]:
        """One flat dict per step with the :data:`KEYFRAME_COLUMNS` keys (``keyframe`` is 1 for selected steps)."""
        chosen = set(self.keyframes)
        return [{"input": input_name, "step": i, "frame": int(f), "time_s": round(float(t), 3),
                 "score": round(float(s), 4), "keyframe": int(i in chosen)}
                for i, (f, t, s) in enumerate(zip(self.frame_indices, self.times, self.scores))]


def result_rows(result, input_name: str = "") -> List[Dict]:
    """The CSV rows of any predictor result: triplet rows for scene graphs, step rows for keyframe results."""
    if isinstance(result, KeyframeResult):
        return result.rows(input_name)
    return result.triplet_rows(input_name)


def rows_to_csv(rows: Sequence[Dict], columns: Sequence[str] = TRIPLET_COLUMNS) -> str:
    """``rows`` as CSV text with a header (boxes written as ``x0 y0 x1 y1``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(f"{v:g}" for v in row[k]) if isinstance(row.get(k), list) else row.get(k, "")
                         for k in columns})
    return buffer.getvalue()
