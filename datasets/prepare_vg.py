#!/usr/bin/env python
"""Check a Visual Genome (VG150) directory, or the synthetic genome, in Scene-Graph-Benchmark's layout.

    python datasets/prepare_vg.py --check datasets/vg
    python datasets/prepare_vg.py --check datasets/synthetic_genome --images 0
    python datasets/prepare_vg.py --demo datasets        # write the demo sets (demo/vg, demo/synthetic_genome)

``--check`` reports every missing file, missing h5 key, inconsistent shape, out-of-range index, image-count mismatch
and missing image, then the split sizes the loader will produce; it exits 1 if anything is wrong. Nothing is
downloaded (see datasets/README.md for where the files come from).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.data.datasets import visual_genome as vg  # noqa: E402
from sgg.utils.errors import run_cli  # noqa: E402


def _check_images(files: vg.VGFiles, image_data: List[dict], sample: int, problems: List[str]) -> None:
    if not os.path.isdir(files.image_dir):
        problems.append(f"Missing image folder '{files.image_dir}' (VG_100K/<image_id>.jpg; merge VG_100K_2 into it).")
        return
    present = set(os.listdir(files.image_dir))
    missing = [e["image_id"] for e in image_data if f"{e['image_id']}.jpg" not in present]
    if missing:
        problems.append(f"{len(missing)} of {len(image_data)} images are missing from '{files.image_dir}', "
                        f"e.g. {', '.join(f'{i}.jpg' for i in missing[:5])}.")
    if sample <= 0:
        return
    from PIL import Image

    rng = random.Random(0)
    have = [e for e in image_data if f"{e['image_id']}.jpg" in present]
    for entry in rng.sample(have, min(sample, len(have))):
        path = os.path.join(files.image_dir, f"{entry['image_id']}.jpg")
        try:
            with Image.open(path) as img:
                size = img.size
        except OSError as e:
            problems.append(f"Image '{path}' cannot be decoded: {e}.")
            continue
        if size != (entry["width"], entry["height"]):
            print(f"  note: '{path}' is {size[0]}x{size[1]}, image_data.json says {entry['width']}x{entry['height']}"
                  " (the mapper rescales boxes; real VG has a few such images)")


def _image_list_without_count_check(files: vg.VGFiles):
    """image_data.json entries (corrupted ids dropped) when the h5 is unusable, or None if unreadable too."""
    import json

    try:
        with open(files.image_data) as f:
            entries = json.load(f)
        return [e for e in entries if e.get("image_id") not in vg.CORRUPTED_IMAGE_IDS]
    except (OSError, ValueError, AttributeError):
        return None


def check(root: str, *, box_scale: int = 1024, num_val_images: int = 5000, image_sample: int = 20) -> List[str]:
    """Check the VG-format directory ``root``; print a report and return the list of problems (empty = OK)."""
    files = vg.VGFiles(root)
    problems: List[str] = []
    print(f"Checking VG-format dataset at '{root}'")
    try:
        vocab = vg.load_vg_vocabulary(files.dicts)
        print(f"  vocabulary: {len(vocab['thing_classes'])} object classes, {len(vocab['predicate_classes'])} "
              f"predicates, {len(vocab['attribute_classes'])} attributes")
    except vg.VGFormatError as e:
        problems.append(str(e))
    image_data = None
    try:
        arrays = vg.read_vg_h5(files.h5, box_scale)
        n_img, n_obj, n_rel = len(arrays["split"]), len(arrays["labels"]), len(arrays["relationships"])
        print(f"  h5: {n_img} images, {n_obj} boxes, {n_rel} relations")
        image_data = vg.load_vg_image_data(files.image_data, n_img)
    except vg.VGFormatError as e:
        problems.append(str(e))
        image_data = _image_list_without_count_check(files)
        if not os.path.isfile(files.image_data):
            problems.append(f"Missing VG image list: '{files.image_data}' does not exist.")
    if not problems:
        try:  # train (no val hold-out, empty images kept) + test covers every image that has boxes
            all_train = vg.load_vg_dicts(root, "train", box_scale=box_scale, num_val_images=0, filter_empty_rels=False)
            vg.load_vg_dicts(root, "test", box_scale=box_scale, num_val_images=0, filter_empty_rels=False)
            sizes = {s: len(vg.load_vg_dicts(root, s, box_scale=box_scale, num_val_images=num_val_images))
                     for s in ("train", "val", "test")}
            print(f"  splits with the standard filters (val = first {num_val_images} train images): "
                  + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f" (train+val before filters: {len(all_train)})")
        except vg.VGFormatError as e:
            problems.append(str(e))
    if image_data is not None:
        _check_images(files, image_data, image_sample, problems)
    if problems:
        print(f"FOUND {len(problems)} PROBLEM(S):")
        for p in problems:
            print(f"  - {p}")
    else:
        print("OK")
    return problems


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", metavar="DIR", help="VG-format directory to check")
    group.add_argument("--demo", metavar="DATASETS_ROOT", help="generate the demo sets under DATASETS_ROOT/demo/")
    parser.add_argument("--box-scale", type=int, default=1024, help="which boxes_<scale> key to read (1024 or 512)")
    parser.add_argument("--num-val-images", type=int, default=5000, help="val hold-out used for the split report")
    parser.add_argument("--images", type=int, default=20, help="how many images to decode and size-check (0 = none)")
    return run_cli(_run, parser.parse_args(argv))


def _run(args) -> int:
    if args.demo:
        from sgg.data.demo.visual_genome_demo import ensure_demo_dataset

        for style in ("vg", "synthetic"):
            print(ensure_demo_dataset(lambda: args.demo, style))
        return 0
    return 1 if check(args.check, box_scale=args.box_scale, num_val_images=args.num_val_images,
                      image_sample=args.images) else 0


if __name__ == "__main__":
    sys.exit(main())
