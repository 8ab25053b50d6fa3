"""Installable package for monai-diff3m: EHR-conditioned diffusion anomaly detection on chest X-rays."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# one version for the package and the bundle: monai_diff3m.__version__, equal to configs/metadata.json's (a test checks)
VERSION = re.search(r'__version__ = "([^"]+)"', Path("monai_diff3m/__init__.py").read_text(encoding="utf-8")).group(1)

setup(
    name="monai-diff3m",
    version=VERSION,
    description="Diff3M for MONAI: EHR-conditioned diffusion anomaly detection on chest X-rays",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # the repository's preprocessing/ folder installs as monai_diff3m.preprocessing: a top-level "preprocessing"
    # package in site-packages would clash with any other project's of that name
    packages=find_packages(include=["monai_diff3m", "monai_diff3m.*"])
    + [f"monai_diff3m.{name}" for name in find_packages(include=["preprocessing", "preprocessing.*"])],
    package_dir={"monai_diff3m.preprocessing": "preprocessing"},
    # the bundle (monai_diff3m/bundle links to bundles/diff3m) and the lung-field weights the scores need, so the
    # main job finds them after any install
    package_data={
        "monai_diff3m": [
            "bundle/LICENSE",
            "bundle/configs/*",
            "bundle/docs/*",
            "bundle/models/model.pt",
            "bundle/models/model_card.json",
            "bundle/models/model_ehr_statistics.json",
            "networks/*.pt",
        ]
    },
    install_requires=[
        "torch>=2.1",
        "monai[fire,einops]>=1.6,<1.7",
        "pytorch-ignite>=0.4.11",
        "numpy",
        "scipy",
        "pandas",
        "scikit-learn",
        "nibabel",
        "pydicom",
        "pillow",
        "tensorboard",
        "matplotlib",
        "tqdm",
    ],
    extras_require={"dev": ["pytest", "ruff", "mypy", "jsonschema"]},
    entry_points={
        "console_scripts": [
            "diff3m-phantoms=monai_diff3m.data.phantoms:main",
        ]
    },
)
