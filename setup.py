"""Install sgg: ``pip install -e ".[all,dev]"``.

Versions are pinned to the combination measured to work on CPU-only machines (DESIGN.md §6): torch 2.15 with
torchvision 0.29.2 from the package registry; the local torch 2.13 CPU file does not work with any registry torchvision.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch==2.15.0",
    "torchvision==0.29.2",
    "numpy>=1.24,<3",
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.9",
    "yacs==0.1.8",
    "pyyaml>=6",
    "pycocotools==2.0.11",
    "h5py==3.16.0",
    "msgspec==0.22.0",  # VG image_data.json: typed decoding of the 3 needed fields, ~4x faster than json
    "scipy>=1.11",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "av==18.1.0",
]

EXTRAS = {
    # text-to-video and SceneLLM
    "diffusion": ["diffusers==0.42.1", "transformers==5.23.0", "safetensors==0.8.0", "peft==0.21.2"],
    # tools/viewer.py and its AppTest (brings pandas, pyarrow, altair, starlette, uvicorn; ~40 s to install on the
    # 2-core machine, so [all] includes it and CI runs the viewer test)
    "app": ["streamlit==1.67.0"],
    "dev": ["pytest==9.0.3", "ruff==0.17.5"],
}
EXTRAS["all"] = sorted({p for k, v in EXTRAS.items() if k != "dev" for p in v})

setup(
    name="sgg",
    version="0.1.0",
    description="Detectron2-style toolkit for image and video scene graph generation and the video models around it",
    packages=find_packages(include=["sgg", "sgg.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
