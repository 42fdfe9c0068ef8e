"""STKET's relation priors (Pu et al., TIP 2024) counted on a video SGG training split.

Per object class ``o`` (every class but the person), from the GT of the training videos:

* one 26-d binary row per (frame, object instance) = ``[attention multi-hot (3) | spatial (6) | contacting (17)]``,
  frames in order, instances in row order within a frame;
* ``initial_prior[o]`` = the mean of all rows of all videos: the marginal P(relation | o) (the attention part sums to
  1 when every object has exactly one attention label);
* ``specific_prior[o][c]`` for each contacting predicate ``c`` seen with ``o``: per video, the mean of the rows
  ``t + 1`` over the rows ``t`` (the last row excluded) whose contacting part contains ``c``; then the mean over the
  videos that have such a ``t`` (a mean of means) — the transition P(relation at t+1 | contacting c at t, o). A
  ``c`` seen only on the last row of videos gets a zero vector, as upstream.

No smoothing, no other normalisation. The JSON layout is upstream's ``data/TrainPrior.json``: keys are 1-based class
indices as strings (background = 0, person = 1, sgg label ``l`` -> key ``str(l + 1)``), values
``{obj_cls_name, initial_prior: [26], c_rel_idx: [contacting indices], c_rel_name: [names], specific_prior: [[26] per
c_rel_idx]}``, so a file made by upstream's counting script loads too. :func:`prior_tensors` turns a file into the
``(K, 26)`` / ``(K, 17, 26)`` arrays a model initialises its parameters from, refusing a file whose class names do not
match the dataset's.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from sgg.utils.errors import DataFormatError

__all__ = ["compute_stket_priors", "save_stket_priors", "load_stket_priors", "prior_tensors", "relation_rows",
           "transition_entropy"]

logger = logging.getLogger(__name__)


def relation_rows(frame: Mapping, groups: Sequence[int] = (3, 6, 17)) -> Dict[int, np.ndarray]:
    """The 26-d binary relation row of every object row (>= 1) of one GT frame: ``{row: (26,) float64}``.

    Relations follow AG's convention in sgg's dicts: attention / contacting ``[0, object, predicate]``, spatial
    ``[object, 0, predicate]`` (predicate = global index 0..25).
    """
    n_pred = int(sum(groups))
    n = len(np.asarray(frame["labels"]).reshape(-1))
    rows = {r: np.zeros(n_pred) for r in range(1, n)}
    rels = np.asarray(frame["relations"], np.int64).reshape(-1, 3)
    for sub, obj, pred in rels.tolist():
        if not 0 <= pred < n_pred:
            raise DataFormatError(f"Frame '{frame.get('frame_key')}': predicate {pred} is outside the {n_pred} "
                                  f"predicates of the groups {tuple(groups)}.")
        row = sub if groups[0] <= pred < groups[0] + groups[1] else obj  # spatial: object -> person
        if row in rows:
            rows[row][pred] = 1.0
    return rows


def compute_stket_priors(videos: Sequence[Mapping], class_names: Sequence[str], predicate_names: Sequence[str],
                         groups: Sequence[int] = (3, 6, 17)) -> Dict[str, dict]:
    """STKET's priors (module docstring) of the training ``videos`` (sgg video dicts: ``frames`` with ``labels`` and
    ``relations``), in upstream's JSON layout. ``class_names`` are sgg's 0-based classes (person = 0),
    ``predicate_names`` the 26 predicates (attention, spatial, contacting)."""
    groups = tuple(int(g) for g in groups)
    n_pred, c_off = sum(groups), groups[0] + groups[1]
    if len(predicate_names) != n_pred:
        raise ValueError(f"compute_stket_priors: {len(predicate_names)} predicate names for groups {groups}.")
    per_class: Dict[int, List[np.ndarray]] = defaultdict(list)  # class -> one (rows, 26) array per video
    for video in videos:
        seq: Dict[int, List[np.ndarray]] = defaultdict(list)
        for frame in video["frames"]:
            labels = np.asarray(frame["labels"], np.int64).reshape(-1)
            for row, vec in relation_rows(frame, groups).items():
                seq[int(labels[row])].append(vec)
        for cls, rows in seq.items():
            per_class[cls].append(np.stack(rows))
    out: Dict[str, dict] = {}
    for cls in sorted(per_class):
        if not 0 <= cls < len(class_names):
            raise DataFormatError(f"compute_stket_priors: object label {cls} is outside the {len(class_names)} "
                                  "classes of the dataset.")
        per_video = per_class[cls]
        every = np.concatenate(per_video)
        seen = np.flatnonzero(every[:, c_off:].sum(0) > 0).tolist()
        specific = []
        for c in seen:
            means = []
            for rows in per_video:
                nxt = np.flatnonzero(rows[:-1, c_off + c] > 0) + 1
                if len(nxt):
                    means.append(rows[nxt].mean(0))
            specific.append(np.mean(means, 0).tolist() if means else [0.0] * n_pred)
        out[str(cls + 1)] = {
            "obj_cls_name": class_names[cls],
            "initial_prior": every.mean(0).tolist(),
            "c_rel_idx": seen,
            "c_rel_name": [predicate_names[c_off + c] for c in seen],
            "specific_prior": specific,
        }
    return out


def save_stket_priors(priors: Mapping, path: str) -> None:
    """Write ``priors`` as JSON, atomically (concurrent ranks never read half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".stket_priors.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(priors, f)
    os.replace(tmp, path)


def load_stket_priors(path: str) -> Dict[str, dict]:
    """Read a prior JSON file (sgg's or upstream's ``TrainPrior.json``), checking its layout."""
    try:
        with open(path) as f:
            priors = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"STKET prior file not found: '{path}' (MODEL.STKET.PRIOR_FILE). Make one with "
                                "python tools/compute_stket_priors.py --dataset ag_train --output FILE, or set "
                                "PRIOR_FILE '' to compute it from DATASETS.TRAIN.") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(f"STKET prior file '{path}' is not valid JSON ({e}).") from None
    if not isinstance(priors, dict):
        raise DataFormatError(f"STKET prior file '{path}': expected a JSON object keyed by class index.")
    for key, entry in priors.items():
        missing = [k for k in ("obj_cls_name", "initial_prior", "c_rel_idx", "specific_prior")
                   if not isinstance(entry, dict) or k not in entry]
        if not key.isdigit() or missing:
            raise DataFormatError(f"STKET prior file '{path}': entry '{key}' must be keyed by a class index and hold "
                                  f"obj_cls_name / initial_prior / c_rel_idx / specific_prior (missing {missing}).")
    return priors


def prior_tensors(priors: Mapping, class_names: Sequence[str], groups: Sequence[int] = (3, 6, 17),
                  source: str = "priors") -> Tuple[np.ndarray, np.ndarray]:
    """``initial (K, 26)`` and ``specific (K, 17, 26)`` float32 arrays indexed by sgg label (person row and classes
    absent from the file stay 0), from a prior dict in upstream's layout.

    Refuses (one line) a file whose class names differ from ``class_names`` (another dataset's priors) or whose
    vectors have the wrong size.
    """
    n_pred, n_con = int(sum(groups)), int(groups[2])
    initial = np.zeros((len(class_names), n_pred), np.float32)
    specific = np.zeros((len(class_names), n_con, n_pred), np.float32)
    for key, entry in priors.items():
        label = int(key) - 1
        if not 0 <= label < len(class_names) or entry["obj_cls_name"] != class_names[label]:
            expected = class_names[label] if 0 <= label < len(class_names) else "no class"
            raise DataFormatError(
                f"STKET prior file '{source}': class {key} is '{entry['obj_cls_name']}' but the dataset's class {key} "
                f"(1-based) is '{expected}'; the priors were counted on another dataset — recompute them with "
                "tools/compute_stket_priors.py on this training split.")
        vec = np.asarray(entry["initial_prior"], np.float32)
        spec = np.asarray(entry["specific_prior"], np.float32).reshape(-1, vec.size) if entry["specific_prior"] \
            else np.zeros((0, n_pred), np.float32)
        idx = np.asarray(entry["c_rel_idx"], np.int64)
        if vec.shape != (n_pred,) or spec.shape != (len(idx), n_pred) or (idx.size and
                                                                           (idx.min() < 0 or idx.max() >= n_con)):
            raise DataFormatError(f"STKET prior file '{source}': class {key} needs a {n_pred}-d initial_prior and one "
                                  f"{n_pred}-d specific_prior per c_rel_idx in [0, {n_con}).")
        initial[label] = vec
        specific[label, idx] = spec
    return initial, specific


def transition_entropy(priors: Mapping, groups: Sequence[int] = (3, 6, 17)) -> Dict[str, float]:
    """How much the contact at t tells about t+1: mean binary entropy (bits per predicate) of the marginal
    ``initial_prior`` vs of the transitions ``specific_prior``, over all (class, contacting predicate) entries.

    A transition prior far below the marginal means the next frame's relations are predictable from the current
    contact (real temporal structure); equal values mean it carries nothing beyond the class.
    """
    def entropy(p: np.ndarray) -> float:
        p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
        return float((-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).mean())

    marg, trans = [], []
    for entry in priors.values():
        for spec in entry["specific_prior"]:
            marg.append(entropy(entry["initial_prior"]))
            trans.append(entropy(spec))
    return {"marginal_bits": float(np.mean(marg)) if marg else 0.0,
            "transition_bits": float(np.mean(trans)) if trans else 0.0, "entries": len(trans)}
