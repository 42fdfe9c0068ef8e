#!/usr/bin/env python
"""The sgg viewer: a Streamlit app to run a trained model on an image or a video and look at its scene graph.

    pip install -e ".[app]"
    streamlit run tools/viewer.py [-- --config-file CFG --weights W --input FILE [--run]]

Sidebar: pick a config (any ``configs/**/*.yaml``, or a path) and a checkpoint (every ``model_final.pth`` /
``model_best.pth`` under ``output/``, or a path), the number of triplets and the score threshold. Main page: upload a
file, give a path, or pick an example of the config's own (demo) test data; *Run* predicts it. Images show the
drawing (boxes, relation arrows, graph panel); videos a frame slider with the overlay of that frame, the timeline of
every relation and, on request, the MP4 of all frames; keyframe models their score curve and keyframes. Below: the
triplet table with filters (predicate, subject / object text, minimum score) and JSON / CSV downloads.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import tempfile
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.config import get_cfg  # noqa: E402
from sgg.data import DatasetCatalog  # noqa: E402
from sgg.engine import Predictor  # noqa: E402
from sgg.engine.predictor import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, reference_dataset  # noqa: E402
from sgg.structures.scene_graph import (  # noqa: E402
    KEYFRAME_COLUMNS,
    TRIPLET_COLUMNS,
    KeyframeResult,
    SceneGraph,
    result_rows,
    rows_to_csv,
)
from sgg.utils.visualizer import SceneGraphVisualizer, best_frame, frame_title  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("sgg.tools.viewer")


def parse_args(argv=None) -> argparse.Namespace:
    """Optional presets: ``streamlit run tools/viewer.py -- --config-file CFG --weights W --input FILE [--run]``."""
    parser = argparse.ArgumentParser(description="sgg viewer presets")
    parser.add_argument("--config-file", default="")
    parser.add_argument("--weights", default="")
    parser.add_argument("--input", default="")
    parser.add_argument("--run", action="store_true", help="predict --input when the page first loads")
    args, _ = parser.parse_known_args(argv)
    return args


def config_choices() -> List[str]:
    """Every config under ``configs/``, relative to the repository, quick (demo) configs first."""
    found = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"),
                                                               recursive=True))
    return sorted(found, key=lambda p: (not p.startswith(os.path.join("configs", "quick")), p))


def checkpoint_choices(root: str = "output") -> List[str]:
    """``model_final.pth`` / ``model_best.pth`` files under ``root`` (newest first)."""
    paths = [p for name in ("model_final.pth", "model_best.pth")
             for p in glob.glob(os.path.join(root, "**", name), recursive=True)]
    return sorted(paths, key=lambda p: -os.path.getmtime(p))


def load_config(config_file: str, weights: str):
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    return cfg


def demo_examples(cfg, task: str, limit: int = 8) -> dict:
    """Up to ``limit`` inputs from the config's reference (test) dataset: label -> image path, video dict or video
    file. Demo datasets are generated on first use."""
    name = reference_dataset(cfg)
    dicts = DatasetCatalog.get(name)
    out = {}
    for d in list(dicts)[:limit]:
        if task == "image":
            out[f"{name}: {os.path.basename(d['file_name'])}"] = d["file_name"]
        elif task == "video":
            out[f"{name}: {d['video_id']} ({len(d['frames'])} frames)"] = d
        elif d.get("video_file"):
            out[f"{name}: {d['video_id']}"] = d["video_file"]
    return out


def filter_rows(rows: List[dict], predicates: Optional[List[str]], text: str, min_score: float) -> List[dict]:
    """Triplet rows with one of ``predicates`` (all when empty), ``text`` in the subject or object name, and
    score >= ``min_score``."""
    text = text.strip().lower()
    return [r for r in rows if (not predicates or r["predicate"] in predicates) and float(r["score"]) >= min_score
            and (not text or text in r["subject"].lower() or text in r["object"].lower())]


def main() -> None:  # noqa: C901 (one page, top to bottom)
    import pandas as pd
    import streamlit as st

    st.set_page_config(page_title="sgg viewer", layout="wide")
    preset = parse_args(sys.argv[1:])
    st.title("sgg viewer")
    st.caption("Scene graphs of your own images and videos, from a trained sgg model.")

    # ------------------------------------------------------------------ model
    side = st.sidebar
    side.header("Model")
    configs = config_choices()
    default_cfg = preset.config_file if preset.config_file in configs else configs[0] if configs else ""
    picked_cfg = side.selectbox("config", configs, index=configs.index(default_cfg) if default_cfg in configs else 0,
                                key="config_pick")
    config_file = side.text_input("or a config path", value=preset.config_file if preset.config_file not in configs
                                  else "", key="config_path").strip() or picked_cfg
    ckpts = checkpoint_choices()
    picked_w = side.selectbox("checkpoint", ckpts, key="weights_pick") if ckpts else ""
    weights = side.text_input("or a checkpoint path", value=preset.weights, key="weights_path").strip() or picked_w
    topk = side.slider("triplets per image / frame", 1, 100, 20, key="topk")
    threshold = side.slider("score threshold", 0.0, 1.0, 0.3, step=0.01, key="threshold")
    if not config_file or not weights:
        st.info("Pick a config and a checkpoint in the sidebar (train one with tools/train_net.py).")
        return

    @st.cache_resource(show_spinner="Loading the model ...")
    def predictor_for(config_file: str, weights: str) -> Predictor:
        return Predictor(load_config(config_file, weights))

    try:
        predictor = predictor_for(config_file, weights)
    except Exception as e:  # a wrong config / checkpoint is shown, not raised
        st.error(f"error: {e}")
        return
    side.success(f"{predictor.cfg.MODEL.META_ARCHITECTURE} · {predictor.task} model · {predictor.dataset_name}")

    # ------------------------------------------------------------------ input
    st.subheader("Input")
    sources = ["demo data", "upload", "path"]
    source = st.radio("source", sources, index=2 if preset.input else 0, horizontal=True, key="source")
    x, label = None, ""
    if source == "upload":
        kinds = IMAGE_EXTENSIONS if predictor.task == "image" else VIDEO_EXTENSIONS
        up = st.file_uploader("an image or a video", type=[e.lstrip(".") for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS]
                              if predictor.task == "image" else [e.lstrip(".") for e in kinds], key="upload")
        if up is not None:
            folder = tempfile.mkdtemp(prefix="sgg_viewer_")
            x = os.path.join(folder, os.path.basename(up.name))
            with open(x, "wb") as f:
                f.write(up.getbuffer())
            label = up.name
    elif source == "path":
        x = st.text_input("file path", value=preset.input, key="input_path").strip() or None
        label = x or ""
    else:
        try:
            examples = demo_examples(predictor.cfg, predictor.task)
        except Exception as e:
            st.error(f"error: {e}")
            examples = {}
        if examples:
            label = st.selectbox("example", list(examples), key="example")
            x = examples[label]

    clicked = st.button("Run", type="primary", key="run", disabled=x is None)
    auto = preset.run and x is not None and not st.session_state.get("auto_ran")
    if clicked or auto:
        st.session_state["auto_ran"] = True
        try:
            result = predictor(x, topk=topk, threshold=threshold)
        except Exception as e:  # bad input: one clear line
            st.error(f"error: {e}")
            result = None
        st.session_state["result"] = result
        st.session_state["label"] = label
    result = st.session_state.get("result")
    if result is None:
        return
    label = st.session_state.get("label", "")

    # ------------------------------------------------------------------ drawings
    vis = SceneGraphVisualizer()
    st.subheader("Prediction")
    if isinstance(result, SceneGraph):
        st.image(vis.draw(result, title=os.path.basename(str(label))))
    elif isinstance(result, KeyframeResult):
        st.pyplot(vis.plot_keyframes(result))
        st.write(f"{len(result.scores)} steps, keyframes at "
                 + ", ".join(f"{result.times[k]:.1f} s" for k in result.keyframes))
    else:
        t = st.slider("frame", 0, len(result) - 1, best_frame(result), key="frame")
        vis.object_colors(result.frames[0])  # colours in order of the video, as in the MP4
        st.image(vis.draw(result.frames[t], title=frame_title(result, t)))
        st.pyplot(vis.plot_timeline(result))
        if st.button("Render the MP4 of all frames", key="render"):
            path = os.path.join(tempfile.mkdtemp(prefix="sgg_viewer_"), "overlay.mp4")
            SceneGraphVisualizer().render_video(result, path)
            st.video(path)

    # ------------------------------------------------------------------ table + export
    rows = result_rows(result, str(label))
    doc = json.dumps({"input": str(label), "model": predictor.cfg.MODEL.META_ARCHITECTURE,
                      "weights": predictor.cfg.MODEL.WEIGHTS, **result.to_dict()}, indent=1)
    if isinstance(result, KeyframeResult):
        st.subheader("Steps")
        st.dataframe(pd.DataFrame(rows, columns=list(KEYFRAME_COLUMNS)))
        csv_text = rows_to_csv(rows, KEYFRAME_COLUMNS)
    else:
        st.subheader("Triplets")
        c1, c2, c3 = st.columns(3)
        predicates = c1.multiselect("predicate", sorted({r["predicate"] for r in rows}), key="filter_predicate")
        text = c2.text_input("subject / object contains", key="filter_text")
        min_score = c3.slider("minimum score", 0.0, 1.0, 0.0, step=0.01, key="filter_score")
        shown = filter_rows(rows, predicates, text, min_score)
        columns = [c for c in TRIPLET_COLUMNS if c not in ("input", "subject_box", "object_box")]
        if isinstance(result, SceneGraph):
            columns = [c for c in columns if c not in ("frame", "time_s")]
        st.caption(f"{len(shown)} of {len(rows)} triplets")
        st.dataframe(pd.DataFrame(shown, columns=columns))
        csv_text = rows_to_csv(shown, TRIPLET_COLUMNS)
    d1, d2 = st.columns(2)
    stem = os.path.splitext(os.path.basename(str(label)))[0] or "prediction"
    d1.download_button("Download JSON", doc, file_name=f"{stem}.json", mime="application/json", key="dl_json")
    d2.download_button("Download CSV", csv_text, file_name=f"{stem}.csv", mime="text/csv", key="dl_csv")


if __name__ == "__main__":
    main()
