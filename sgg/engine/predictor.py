"""``Predictor``: a trained model applied to your own image or video, returning its scene graph (or keyframes).

Like detectron2's ``DefaultPredictor``: ``Predictor(cfg)`` builds ``MODEL.META_ARCHITECTURE``, loads
``MODEL.WEIGHTS`` (refusing a checkpoint of another model) and puts it in eval mode; ``predictor(x)`` returns

* image SGG models (SpeaQ, IterativeSG, DETR, FrequencyBaseline): a :class:`~sgg.structures.scene_graph.SceneGraph`
  for ``x`` = an image path, an (H, W, 3) uint8 RGB array, a PIL image, or a scene-graph dataset dict;
* video SGG models (STTran, VideoFrequencyBaseline): a :class:`~sgg.structures.scene_graph.VideoSceneGraph` for
  ``x`` = a video path (sampled at ``INPUT.VIDEO_FPS``), frames ((T, H, W, 3) uint8 RGB array or list of arrays), or
  an Action Genome video dict; :meth:`Predictor.predict_video` also runs an image model frame by frame;
* the keyframe model (KeyframeDetector): a :class:`~sgg.structures.scene_graph.KeyframeResult` (a score per step
  and the selected keyframes) for ``x`` = a video path (sampled at ``INPUT.KEYFRAME.FPS``) or frames.

Inputs are preprocessed by the dataset's own test-time mapper (``build_mapper(cfg, name, is_train=False)`` on the
first test dataset), so resizing and normalisation are exactly those of evaluation; predictions come back in the
input's original pixels. Triplets: image models give one predicate per (subject, object) pair (the best), scored
p(predicate) x subject score x object score; video models give the top attention predicate and every spatial /
contacting predicate of each (person, object) pair (spatial ones point object -> person, as Action Genome's), scored
the same way. Both keep the ``topk`` best with score >= ``threshold``; the objects kept are those in a kept triplet
and those scoring >= ``threshold``. A model that returns ``rel_uncertainty`` (image) or ``uncertainty`` (video frame),
``(P,)`` or ``(P, num_predicates)``, gets one uncertainty per triplet.

Models that score given boxes (PredCls / SGCls video models, FrequencyBaseline without a detector) need annotated
inputs: a plain image or video is refused with a message naming the SGDet alternative.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sgg.checkpoint import load_matching_weights
from sgg.config import ConfigError
from sgg.data import DatasetCatalog, MetadataCatalog, build_mapper
from sgg.data.dataset_mapper import SceneGraphMapper, read_image
from sgg.data.keyframe_mapper import KeyframeMapper
from sgg.data.video_mapper import ActionGenomeMapper
from sgg.evaluation.video_scene_graph import PREDICATE_GROUPS
from sgg.modeling import build_model
from sgg.structures.kts import select_shot_keyframes
from sgg.structures.scene_graph import KeyframeResult, SceneGraph, VideoSceneGraph
from sgg.structures.segments import select_topk_steps
from sgg.utils.errors import SGGError
from sgg.utils.video_io import VideoError, iter_video_frames, video_info

__all__ = ["Predictor", "InputError", "image_triplets", "video_frame_triplets", "IMAGE_EXTENSIONS",
           "VIDEO_EXTENSIONS", "input_kind", "reference_dataset"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")

ImageInput = Union[str, np.ndarray, Image.Image, dict]
VideoInput = Union[str, np.ndarray, Sequence[np.ndarray], dict]


class InputError(SGGError, ValueError):
    """An input the predictor cannot use (not an image, an unreadable video, the wrong kind for the model)."""


def input_kind(path: str) -> str:
    """``"image"``, ``"video"`` or ``""`` from a file name's extension."""
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else ""


# ---------------------------------------------------------------------------- triplets from model outputs
def _select(scores: np.ndarray, topk: int, threshold: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    return order[scores[order] >= threshold][: max(0, int(topk))]


def _uncertainty(value, rows: np.ndarray, predicates: np.ndarray) -> Optional[np.ndarray]:
    if value is None:
        return None
    u = value.detach().float().cpu().numpy() if torch.is_tensor(value) else np.asarray(value, np.float32)
    return (u.reshape(-1)[rows] if u.ndim == 1 else u[rows, predicates]).astype(np.float32)


def image_triplets(pred: dict, topk: int, threshold: float
                   ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """One image's ``{scores (N,), rel_pairs (P, 2), rel_scores (P, num_predicates)[, rel_uncertainty]}`` (the
    evaluator's format) -> ``(triplets (K, 3) [sub, obj, pred], scores (K,), uncertainties (K,) or None)``: the best
    predicate of every pair, scored p(pred) x s_sub x s_obj, the ``topk`` best with score >= ``threshold``."""
    obj_scores = pred["scores"].detach().float().cpu().numpy().reshape(-1)
    pairs = pred["rel_pairs"].detach().cpu().numpy().reshape(-1, 2).astype(np.int64)
    rel = pred["rel_scores"].detach().float().cpu().numpy().reshape(len(pairs), -1)
    if not len(pairs) or rel.shape[1] == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.float32), None
    predicate = rel.argmax(1)
    score = rel[np.arange(len(pairs)), predicate] * obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]]
    keep = _select(score, topk, threshold)
    triplets = np.concatenate([pairs[keep], predicate[keep, None]], axis=1)
    return triplets, score[keep].astype(np.float32), _uncertainty(pred.get("rel_uncertainty"), keep, predicate[keep])


def video_frame_triplets(frame: dict, topk: int, threshold: float
                         ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """One frame of a video model's output ``{scores (N,), pairs (P, 2) [person, object], attention (P, 3),
    spatial (P, 6), contacting (P, 17)[, uncertainty]}`` -> ``(triplets (K, 3), scores (K,), uncertainties or
    None)`` over Action Genome's 26 predicates: the top attention predicate and every spatial / contacting one of
    each pair (spatial: object -> person), scored p(pred) x s_person x s_object, the ``topk`` best >= ``threshold``."""
    obj_scores = frame["scores"].detach().float().cpu().numpy().reshape(-1)
    pairs = frame["pairs"].detach().cpu().numpy().reshape(-1, 2).astype(np.int64)
    if not len(pairs):
        return np.zeros((0, 3), np.int64), np.zeros(0, np.float32), None
    rows, subjects, objects, predicates, probs = [], [], [], [], []
    for name, start, size, reverse in PREDICATE_GROUPS:
        p = frame[name].detach().float().cpu().numpy().reshape(len(pairs), size)
        if name == "attention":
            r, c = np.arange(len(pairs)), p.argmax(1)
        else:
            r, c = np.nonzero(np.ones_like(p, dtype=bool))
        rows.append(r)
        subjects.append(pairs[r, 1] if reverse else pairs[r, 0])
        objects.append(pairs[r, 0] if reverse else pairs[r, 1])
        predicates.append(start + c)
        probs.append(p[r, c])
    rows, subjects, objects, predicates, probs = (np.concatenate(x) for x in
                                                  (rows, subjects, objects, predicates, probs))
    score = probs * obj_scores[subjects] * obj_scores[objects]
    keep = _select(score, topk, threshold)
    triplets = np.stack([subjects[keep], objects[keep], predicates[keep]], axis=1)
    return triplets, score[keep].astype(np.float32), _uncertainty(frame.get("uncertainty"), rows[keep],
                                                                   predicates[keep])


def _scene_graph(pred: dict, triplets, triplet_scores, uncertainties, threshold: float, class_names,
                 predicate_names, image_size, image) -> SceneGraph:
    """Keep the objects used by a triplet or scoring >= ``threshold`` (by decreasing score); re-index triplets."""
    boxes = pred["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
    labels = pred["labels"].detach().cpu().numpy().reshape(-1)
    scores = pred["scores"].detach().float().cpu().numpy().reshape(-1)
    used = np.zeros(len(boxes), dtype=bool)
    used[triplets[:, :2].reshape(-1)] = True
    keep = np.nonzero(used | (scores >= threshold))[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    new_index = np.full(len(boxes), -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    triplets = np.concatenate([new_index[triplets[:, :2]], triplets[:, 2:]], axis=1) if len(triplets) else triplets
    return SceneGraph(boxes=boxes[keep], labels=labels[keep], scores=scores[keep], triplets=triplets,
                      triplet_scores=triplet_scores, uncertainties=uncertainties, class_names=list(class_names),
                      predicate_names=list(predicate_names), image_size=tuple(int(v) for v in image_size),
                      image=image)


# ---------------------------------------------------------------------------- the predictor
def reference_dataset(cfg) -> str:
    """The dataset whose test mapper and vocabularies the predictor uses: the first test, train or real dataset."""
    m = cfg.DATASETS.MULTI_DATASET
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN) + (list(m.REAL_DATASETS) if m.ENABLED else [])
    if not names:
        raise ConfigError("The predictor takes its preprocessing and class names from a dataset: set DATASETS.TEST "
                          "(e.g. the one the model was evaluated on).")
    return names[0]


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise InputError(f"An image array must be (H, W, 3) uint8 RGB, got shape {arr.shape} dtype {arr.dtype}.")
    return np.ascontiguousarray(arr[:, :, :3])


def _read_image_file(path: str) -> np.ndarray:
    try:
        return read_image(path, "RGB")
    except FileNotFoundError:
        raise InputError(f"Input '{path}' does not exist.") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        kind = "a video" if input_kind(path) == "video" else "an image that can be decoded"
        raise InputError(f"'{path}' is not {kind} ({type(e).__name__}); give a JPEG / PNG image file.") from None


class Predictor:
    """A trained model on single inputs; see the module docstring.

    Args:
        cfg: a config (``MODEL.WEIGHTS`` = the checkpoint; ``DATASETS.TEST`` names the dataset whose test-time
            mapper and class names are used).
        topk: triplets kept per image / frame.
        threshold: minimum triplet (and shown object) score.
        keyframe_selection: ``"topk"`` (the ``TEST.KEYFRAME.SUMMARY_RATIO`` best steps) or ``"shots"`` (the
            protocol's KTS + knapsack summary, one keyframe per chosen shot; video files only).
        require_weights: refuse to run without ``MODEL.WEIGHTS`` (an untrained model predicts noise).
        model: use this (already built, e.g. the one being trained) instead of building ``cfg``'s and loading
            ``MODEL.WEIGHTS``; its train / eval mode is left to the caller.

    Attributes: ``task`` (``"image"``, ``"video"`` or ``"keyframe"``), ``model``, ``mapper``, ``class_names``,
    ``predicate_names``, ``dataset_name``.
    """

    def __init__(self, cfg, *, topk: int = 20, threshold: float = 0.3, keyframe_selection: str = "topk",
                 require_weights: bool = True, model: Optional[torch.nn.Module] = None):
        if keyframe_selection not in ("topk", "shots"):
            raise ValueError(f"keyframe_selection must be 'topk' or 'shots', got {keyframe_selection!r}.")
        self.cfg = cfg.clone()
        self.topk, self.threshold, self.keyframe_selection = int(topk), float(threshold), keyframe_selection
        self.dataset_name = reference_dataset(cfg)
        DatasetCatalog.configure(cfg)  # what setup() does; idempotent, so a Predictor works without it too
        self.mapper = build_mapper(cfg, self.dataset_name, is_train=False)
        if isinstance(self.mapper, SceneGraphMapper):
            self.task = "image"
        elif isinstance(self.mapper, ActionGenomeMapper):
            self.task = "video"
        elif isinstance(self.mapper, KeyframeMapper):
            self.task = "keyframe"
        else:
            raise ConfigError(f"The predictor handles image / video scene graph and keyframe models; "
                              f"{cfg.MODEL.META_ARCHITECTURE} on {self.dataset_name} uses {type(self.mapper).__name__}"
                              " (text-to-video: tools/generate_video.py).")
        if model is not None:
            self.model = model
        else:
            self.model = build_model(cfg)
            if cfg.MODEL.WEIGHTS:
                load_matching_weights(self.model, cfg.MODEL.WEIGHTS)
            elif require_weights and any(True for _ in self.model.parameters()):
                raise ConfigError("The predictor needs MODEL.WEIGHTS (a trained checkpoint, e.g. "
                                  "output/<run>/model_final.pth).")
            self.model.eval()
        if self.task == "keyframe" and not hasattr(self.model, "backbone"):
            raise ConfigError(f"{cfg.MODEL.META_ARCHITECTURE} scores precomputed h5 features; a video needs the "
                              "pixel model (KeyframeDetector, configs/quick/keyframe_demo.yaml).")
        meta = MetadataCatalog.get(self.dataset_name)
        self.class_names: List[str] = list(meta.get("thing_classes", []) or [])
        self.predicate_names: List[str] = list(meta.get("predicate_classes", []) or [])
        self.image_format = cfg.INPUT.FORMAT
        logger.info("Predictor: %s (%s task) with %s, preprocessing of %s", cfg.MODEL.META_ARCHITECTURE, self.task,
                    "the given model" if model is not None else cfg.MODEL.WEIGHTS or "no weights", self.dataset_name)

    @property
    def needs_gt_boxes(self) -> bool:
        """True when the model scores given boxes, so only annotated dataset dicts can be predicted."""
        return bool(getattr(self.model, "needs_gt_boxes", False))

    def _refuse_unannotated(self, what: str) -> None:
        if self.needs_gt_boxes:
            mode = getattr(self.model, "mode", "")
            alternative = ("set MODEL.DETR.DETECTOR_WEIGHTS to a trained DETR (SGDet FREQ)" if self.task == "image"
                           else "use an SGDet model, e.g. configs/quick/sttran_sgdet_demo.yaml")
            raise InputError(f"{self.cfg.MODEL.META_ARCHITECTURE}{' in ' + mode if mode else ''} scores the "
                             f"ground-truth boxes of annotated data; {what} has none: {alternative}, or pass a "
                             "dataset dict.")

    def __call__(self, x, *, topk: Optional[int] = None, threshold: Optional[float] = None):
        """Predict one input (see the module docstring; an image model given a video file runs on every sampled
        frame); ``topk`` / ``threshold`` override the constructor's."""
        topk = self.topk if topk is None else int(topk)
        threshold = self.threshold if threshold is None else float(threshold)
        if self.task == "image":
            if isinstance(x, str) and input_kind(x) == "video":
                return self.predict_video(x, topk=topk, threshold=threshold)
            return self.predict_image(x, topk=topk, threshold=threshold)
        if self.task == "video":
            return self.predict_video(x, topk=topk, threshold=threshold)
        return self.predict_keyframes(x)

    # ------------------------------------------------------------------ images
    def predict_image(self, image: ImageInput, *, topk: Optional[int] = None,
                      threshold: Optional[float] = None) -> SceneGraph:
        """Scene graph of one image (path, RGB array, PIL image or dataset dict)."""
        if self.task != "image":
            raise InputError(f"{self.cfg.MODEL.META_ARCHITECTURE} is a {self.task} model: it takes videos, not "
                             "images.")
        topk = self.topk if topk is None else int(topk)
        threshold = self.threshold if threshold is None else float(threshold)
        if isinstance(image, dict):
            d = dict(image)
            rgb = _read_image_file(d["file_name"])
        else:
            self._refuse_unannotated("an image")
            name = image if isinstance(image, str) else "<array>"
            rgb = _read_image_file(image) if isinstance(image, str) else _as_rgb_array(image)
            d = {"file_name": name, "image_id": name, "height": rgb.shape[0], "width": rgb.shape[1],
                 "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                 "relations": np.zeros((0, 3), np.int64)}
        d["image"] = rgb[:, :, ::-1] if self.image_format == "BGR" else rgb
        with torch.no_grad():
            pred = self.model([self.mapper(d)])[0]
        triplets, scores, unc = image_triplets(pred, topk, threshold)
        return _scene_graph(pred, triplets, scores, unc, threshold, self.class_names, self.predicate_names,
                            (d["height"], d["width"]), rgb)

    # ------------------------------------------------------------------ videos
    def _check_video_path(self, path: str) -> None:
        if not os.path.exists(path):
            raise InputError(f"Input '{path}' does not exist.")
        if input_kind(path) == "image":
            raise InputError(f"'{path}' is an image; {self.cfg.MODEL.META_ARCHITECTURE} is a {self.task} model: give "
                             "it a video.")

    def _decode(self, path: str, fps: float, size=None, progress: Optional[Callable] = None):
        """``(frames (T, H, W, 3), native indices (T,), times (T,))`` of ``path`` at ``fps``; InputError if
        unreadable."""
        self._check_video_path(path)
        frames, picks, times = [], [], []
        try:
            for index, t, image in iter_video_frames(path, fps=fps, size=size):
                frames.append(image)
                picks.append(index)
                times.append(t)
                if progress is not None:
                    progress(len(frames))
        except VideoError as e:
            raise InputError(f"Cannot read video '{path}': {str(e).split(': ', 1)[-1]}") from None
        if not frames:
            raise InputError(f"No frame could be decoded from '{path}'; it is empty or not a video.")
        return np.stack(frames), np.asarray(picks, np.int64), np.asarray(times, np.float64)

    @staticmethod
    def _frames_array(frames) -> np.ndarray:
        arr = np.stack([_as_rgb_array(f) for f in frames]) if isinstance(frames, (list, tuple)) else \
            np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or not len(arr):
            raise InputError(f"Video frames must be a non-empty (T, H, W, 3) uint8 RGB array, got {arr.shape} "
                             f"{arr.dtype}.")
        return arr

    def predict_video(self, video: VideoInput, *, topk: Optional[int] = None, threshold: Optional[float] = None,
                      progress: Optional[Callable[[int], None]] = None) -> VideoSceneGraph:
        """Scene graph of every sampled frame of a video (path, frames or Action Genome video dict). A video model
        sees the whole clip at once; an image model is run on each frame (sampled at ``INPUT.VIDEO_FPS``).
        ``progress(n)`` is called after each decoded (image model: predicted) frame."""
        if self.task == "keyframe":
            raise InputError(f"{self.cfg.MODEL.META_ARCHITECTURE} is a keyframe model; use predict_keyframes.")
        topk = self.topk if topk is None else int(topk)
        threshold = self.threshold if threshold is None else float(threshold)
        fps = float(self.cfg.INPUT.VIDEO_FPS)
        if self.task == "image":
            if isinstance(video, dict):
                raise InputError("An image model takes image dataset dicts, not a video dict.")
            self._refuse_unannotated("a plain video")
            if isinstance(video, str):
                rgb, indices, times = self._decode(video, fps)
            else:
                rgb = self._frames_array(video)
                indices, times = np.arange(len(rgb)), np.arange(len(rgb)) / fps
            graphs = []
            for image in rgb:
                graphs.append(self.predict_image(image, topk=topk, threshold=threshold))
                if progress is not None:
                    progress(len(graphs))
            return VideoSceneGraph(frames=graphs, frame_indices=indices, times=times, fps=fps)
        if isinstance(video, dict):
            v = dict(video)
            rgb = np.stack([_read_image_file(f["file_name"]) for f in v["frames"]])
            indices = np.arange(len(rgb))
            times = indices / fps
        else:
            self._refuse_unannotated("a plain video")
            if isinstance(video, str):
                rgb, indices, times = self._decode(video, fps, progress=progress)
                name = os.path.splitext(os.path.basename(video))[0]
            else:
                rgb = self._frames_array(video)
                indices, times, name = np.arange(len(rgb)), np.arange(len(rgb)) / fps, "frames"
            h, w = rgb.shape[1:3]
            v = {"video_id": name, "dataset_name": "",
                 "frames": [{"frame_key": f"{name}/{int(i):06d}", "file_name": "", "height": h, "width": w}
                            for i in indices]}
        v["frames_rgb"] = rgb
        with torch.no_grad():
            out = self.model([self.mapper(v)])[0]["frames"]
        graphs = []
        for frame_pred, image in zip(out, rgb):
            triplets, scores, unc = video_frame_triplets(frame_pred, topk, threshold)
            graphs.append(_scene_graph(frame_pred, triplets, scores, unc, threshold, self.class_names,
                                       self.predicate_names, image.shape[:2], image))
        return VideoSceneGraph(frames=graphs, frame_indices=indices, times=times, fps=fps)

    # ------------------------------------------------------------------ keyframes
    def predict_keyframes(self, video: Union[str, np.ndarray, Sequence[np.ndarray]],
                          ratio: Optional[float] = None) -> KeyframeResult:
        """Per-step importance scores of a video (path or frames sampled at ``INPUT.KEYFRAME.FPS``) and the
        keyframes selected at ``ratio`` (default ``TEST.KEYFRAME.SUMMARY_RATIO``)."""
        if self.task != "keyframe":
            raise InputError(f"{self.cfg.MODEL.META_ARCHITECTURE} is a {self.task} scene graph model, not a "
                             "keyframe model.")
        ratio = float(self.cfg.TEST.KEYFRAME.SUMMARY_RATIO if ratio is None else ratio)
        fps = float(self.cfg.INPUT.KEYFRAME.FPS)
        if isinstance(video, str):
            self._check_video_path(video)
            name = os.path.splitext(os.path.basename(video))[0]
            try:
                inputs = self.mapper({"source": "video", "video_id": name, "video_file": video})
                native_fps = video_info(video)["fps"] or fps
                n_frames = max(int(video_info(video)["num_frames"]), int(inputs["picks"][-1]) + 1)
            except (VideoError, ValueError) as e:
                raise InputError(f"Cannot read video '{video}': {str(e).split(': ', 1)[-1]}") from None
            times = inputs["picks"].numpy() / native_fps
        else:
            frames = self._frames_array(video)
            inputs = self.mapper({"source": "frames", "video_id": "frames", "frames_rgb": frames,
                                  "picks": np.arange(len(frames))})
            times, n_frames = np.arange(len(frames)) / fps, len(frames)
        with torch.no_grad():
            scores = self.model([inputs])[0]["scores"].float().cpu().numpy()
        picks = inputs["picks"].numpy()
        small = inputs["frames"].permute(0, 2, 3, 1).numpy()
        if self.keyframe_selection == "shots":
            keyframes = select_shot_keyframes(scores, small, picks, n_frames, ratio)
        else:
            keyframes = select_topk_steps(scores, ratio)
        return KeyframeResult(scores=scores, frame_indices=picks, times=times, keyframes=keyframes,
                              selection=self.keyframe_selection, ratio=ratio, frames=small)
