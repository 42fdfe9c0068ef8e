"""Package layout for setuptools (the metadata is in pyproject.toml).

Besides ``sgg`` itself a wheel carries ``configs/`` as ``sgg/model_zoo/configs`` (found by :mod:`sgg.model_zoo`) and
``tools/`` as the ``sgg_tools`` package behind the console scripts (``sgg-train``, ``sgg-train-seed`` ...), so an
installed sgg runs its demos from any folder. A source checkout (``pip install -e .``) uses the folders in place.
"""

from setuptools import find_packages, setup

CONFIG_FOLDERS = ["", "quick", "action_genome", "tvsum", "ssv2", "tune", "easg"]

setup(
    packages=find_packages(include=["sgg", "sgg.*"]) + ["sgg_tools", "sgg_tools.benchmarks", "sgg.model_zoo.configs"],
    package_dir={"sgg_tools": "tools", "sgg.model_zoo.configs": "configs"},
    package_data={"sgg.model_zoo.configs": [f"{d}/*.yaml" if d else "*.yaml" for d in CONFIG_FOLDERS]},
)
