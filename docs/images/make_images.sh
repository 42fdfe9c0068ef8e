#!/usr/bin/env bash
# Regenerates the pictures of docs/visualization.md and the README (docs/images/*.png) with the demo models:
#   bash docs/images/make_images.sh            # RUNS=output: trains any missing demo model first (README commands)
# Needs pip install -e ".[all]" (streamlit for the viewer) and Debian's chromium for the viewer screenshot.
# Intermediate outputs (MP4s, triplets.json/csv, the inputs) stay in $OUT; only small palette PNGs are copied.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SGG_DATASETS="${SGG_DATASETS:-datasets}"
RUNS="${RUNS:-output}"
OUT="${OUT:-output/doc_images}"
IMAGE_INDEX="${IMAGE_INDEX:-4}"   # which demo_vg_test image the image figure shows
VIDEO_ID="${VIDEO_ID:-42WVN}"     # which demo_ag_test video the video figures show
mkdir -p "$OUT/inputs"

train() {  # config, run folder, overrides: train only when the run has no model_final.pth
  local cfg=$1 dir=$2; shift 2
  [ -f "$dir/model_final.pth" ] || python tools/train_net.py --config-file "$cfg" OUTPUT_DIR "$dir" "$@"
}
train configs/quick/detr_demo.yaml "$RUNS/detr_demo"
train configs/quick/speaq_demo.yaml "$RUNS/speaq_demo" MODEL.DETR.DETECTOR_WEIGHTS "$RUNS/detr_demo/model_final.pth"
train configs/quick/sttran_sgdet_demo.yaml "$RUNS/sttran_demo_sgdet"
train configs/quick/keyframe_demo.yaml "$RUNS/keyframe_demo"

# Inputs "of your own": a demo VG test picture as a JPEG, a demo AG test video as an MP4 (its frames at 2 fps), and a
# demo TVSum test video (already an MP4).
python - "$OUT/inputs" "$IMAGE_INDEX" "$VIDEO_ID" <<'PY'
import os, shutil, sys
import numpy as np
from PIL import Image
sys.path.insert(0, os.getcwd())
from sgg.data import DatasetCatalog
from sgg.utils.video_io import write_video
out, index, video_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
Image.open(DatasetCatalog.get("demo_vg_test")[index]["file_name"]).convert("RGB").save(f"{out}/photo.jpg", quality=95)
video = next(v for v in DatasetCatalog.get("demo_ag_test") if v["video_id"].startswith(video_id))
frames = np.stack([np.asarray(Image.open(f["file_name"]).convert("RGB")) for f in video["frames"]])
write_video(f"{out}/clip.mp4", frames, fps=2.0)
shutil.copy(DatasetCatalog.get("demo_tvsum_raw_split0_test")[0]["video_file"], f"{out}/tvsum.mp4")
PY

python tools/demo.py --config-file configs/quick/speaq_demo.yaml --input "$OUT/inputs/photo.jpg" --output "$OUT/image" \
  --topk 6 --threshold 0.1 MODEL.WEIGHTS "$RUNS/speaq_demo/model_final.pth"
python tools/demo.py --config-file configs/quick/sttran_sgdet_demo.yaml --input "$OUT/inputs/clip.mp4" \
  --output "$OUT/video" --topk 10 --threshold 0.5 MODEL.WEIGHTS "$RUNS/sttran_demo_sgdet/model_final.pth"
python tools/demo.py --config-file configs/quick/keyframe_demo.yaml --input "$OUT/inputs/tvsum.mp4" \
  --output "$OUT/keyframes" MODEL.WEIGHTS "$RUNS/keyframe_demo/model_final.pth"
python tools/viewer_screenshot.py --config-file configs/quick/sttran_sgdet_demo.yaml \
  --weights "$RUNS/sttran_demo_sgdet/model_final.pth" --input "$OUT/inputs/clip.mp4" --size 1280x1700 \
  --output "$OUT/viewer.png"

# Small PNGs for the repository: a 256-colour palette (the drawings use few colours), then optimised.
python - "$OUT" docs/images <<'PY'
import sys
from PIL import Image
out, docs = sys.argv[1], sys.argv[2]
for src, dst in ((f"{out}/image/photo.png", "image_scene_graph.png"), (f"{out}/video/clip_frame.png", "video_frame.png"),
                 (f"{out}/video/clip_timeline.png", "video_timeline.png"),
                 (f"{out}/keyframes/tvsum_keyframes.png", "keyframes.png"), (f"{out}/viewer.png", "viewer.png")):
    Image.open(src).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(f"{docs}/{dst}", optimize=True)
    print(f"{docs}/{dst}")
PY
