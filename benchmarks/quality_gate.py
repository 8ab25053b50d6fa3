"""The quality gate on every real film of ``../shared/data`` and on made-up non-films.

``python benchmarks/quality_gate.py [--data ../shared/data]`` prints two Markdown tables: per real set, how many
films the gate refuses (it must be none) and each measure's closest film to its threshold (the margin); per made-up
non-film (gradients, noise, graphics, strips), its measures and the gate's verdict in the ``fixed`` and
``percentile`` intensity modes. About 20 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from monai_diff3m.transforms import CheckImageQualityd, LoadChestXRayd
from monai_diff3m.transforms.quality import (
    MAX_ASPECT_RATIO,
    MAX_ROUGHNESS,
    MEAN_RANGE,
    MIN_DETAIL,
    MIN_GREY_LEVELS,
    MIN_STD,
    MIN_STD_NORMALISED,
    ImageQuality,
    measure_image_quality,
    quality_problem,
)

#: Real film sets: (folder, image sub-folder) of ``../shared/data`` (each folder's SOURCE.md says what it holds).
REAL_SETS = (
    ("nih_cxr14_dev", "images"),
    ("nih_cxr14_dev64", "images"),
    ("zhanglab_train", "images"),
    ("zhanglab_train", "images64"),
)

GATES = {mode: CheckImageQualityd(keys="image", intensity_mode=mode) for mode in ("fixed", "percentile")}


def _load(path: Path) -> ImageQuality:
    return measure_image_quality(LoadChestXRayd(keys="image")({"image": str(path)})["image"])


def _verdict(quality: ImageQuality, mode: str) -> str:
    """ "passes", or the gate's reason in short (its text up to the measured values) under ``intensity_mode``."""
    gate = GATES[mode]
    problem = quality_problem(
        quality,
        gate.min_std,
        gate.mean_range,
        gate.max_roughness,
        gate.max_aspect_ratio,
        gate.min_grey_levels,
        gate.min_detail,
    )
    return "passes" if problem is None else problem.split(":")[0].removeprefix("it ").removeprefix("its ")


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    unit = (values - values.min()) / (values.max() - values.min())
    return low + (high - low) * unit


def non_films(film: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Made-up images that are not chest films, in [0, 1]; ``film`` (256 x 256, in [0, 1]) is cut into strips."""
    rng = np.random.default_rng(0)
    y, x = np.meshgrid(np.linspace(-1, 1, 256), np.linspace(-1, 1, 256), indexing="ij")
    for name, ramp in (("horizontal", x), ("vertical", y), ("diagonal", x + y), ("30 degrees", x + 0.55 * y)):
        yield f"linear gradient, {name}, full range", _grey(ramp, 0, 1)
        yield f"linear gradient, {name}, std 0.011", _grey(ramp, 0.48, 0.52)
    radius = np.hypot(x, y)
    yield "radial gradient, centred", _grey(radius, 0.2, 0.8)
    yield "radial gradient, centred, std 0.011", _grey(radius, 0.48, 0.52)
    yield "radial gradient, off-centre", _grey(-np.hypot(x - 0.4, y + 0.3), 0.1, 0.9)
    yield "vignette (Gaussian blob)", _grey(np.exp(-3 * radius**2), 0.2, 0.8)
    yield "cosine, one period", _grey(np.cos(np.pi * x), 0.2, 0.8)
    for sigma in (0.01, 0.03, 0.06):
        yield (
            f"linear gradient (std 0.23) + noise sigma {sigma}",
            np.clip(_grey(x, 0.1, 0.9) + sigma * rng.standard_normal(x.shape), 0, 1),
        )
    for sigma in (0.002, 0.01, 0.05):
        yield f"constant 0.5 + noise sigma {sigma}", np.clip(0.5 + sigma * rng.standard_normal(x.shape), 0, 1)
    yield "uniform noise", rng.random(x.shape)
    for side in (4, 32, 64):
        yield (
            f"checkerboard, {side}-pixel squares",
            ((np.arange(256)[:, None] // side + np.arange(256) // side) % 2) * 1.0,
        )
    page = np.ones((256, 256))
    for row in range(16, 240, 20):
        for column in range(12, 240, 9):
            if rng.random() < 0.8:
                page[row : row + 10, column : column + 6][rng.random((10, 6)) < 0.45] = 0
    yield "text-like page, black on white", page
    yield "text-like page, white on black", 1 - page
    strip = Image.fromarray((film[:, 125:130] * 255).round().astype(np.uint8)).resize(
        (20, 5000), Image.Resampling.BILINEAR
    )
    yield "strip 5000 x 20 cut from a film", np.asarray(strip) / 255
    yield "strip 20 x 5000 cut from a film", np.asarray(strip).T / 255
    yield "strip 256 x 64 (4:1) of a film", film[:, 96:160]
    yield "strip 96 x 256 (1:2.7) of a film", film[80:176]
    yield "crop 256 x 128 (2:1) of a film, passes by design", film[:, 64:192]
    yield "crop 256 x 200 (1.28:1, a 35 x 43 cm format) of a film", film[:, 28:228]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _real_set_row(name: str, measures: list[ImageQuality]) -> str:
    refused = [sum(_verdict(m, mode) != "passes" for m in measures) for mode in ("fixed", "percentile")]
    return _row(
        [
            name,
            len(measures),
            f"{refused[0]} / {refused[1]}",
            f"{min(m.std for m in measures):.3f}",
            f"{min(m.mean for m in measures):.3f} to {max(m.mean for m in measures):.3f}",
            f"{max(m.roughness for m in measures):.3f}",
            f"{min(m.detail for m in measures):.3f}",
            min(m.grey_levels for m in measures),
            f"{max(m.aspect_ratio for m in measures):.2f}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    data = Path(parser.parse_args().data)

    print(
        f"Thresholds: aspect ratio <= {MAX_ASPECT_RATIO}, std >= {MIN_STD} (fixed) / {MIN_STD_NORMALISED:.4f} "
        f"(normalising), mean in {list(MEAN_RANGE)} (fixed), grey levels >= {MIN_GREY_LEVELS}, "
        f"roughness <= {MAX_ROUGHNESS}, detail >= {MIN_DETAIL}\n"
    )
    columns = ["real set", "films", "refused (fixed / percentile)", "min std", "mean range", "max roughness"]
    print(_row(columns + ["min detail", "min grey levels", "max aspect"]))
    print(_row(["---"] * 9))
    every: list[ImageQuality] = []
    for folder, images in REAL_SETS:
        measures = [_load(path) for path in sorted((data / folder / images).glob("*.png"))]
        every += measures
        print(_real_set_row(f"{folder}/{images}", measures))
    print(_real_set_row("**all**", every))
    print(
        f"\nMargins over all {len(every)} real films (closest film / threshold): "
        f"std {min(m.std for m in every) / MIN_STD:.2f}x, "
        f"mean {min(m.mean for m in every) - MEAN_RANGE[0]:.3f} and {MEAN_RANGE[1] - max(m.mean for m in every):.3f}, "
        f"roughness {MAX_ROUGHNESS / max(m.roughness for m in every):.2f}x, "
        f"detail {min(m.detail for m in every) / MIN_DETAIL:.2f}x, "
        f"grey levels {min(m.grey_levels for m in every) / MIN_GREY_LEVELS:.2f}x, "
        f"aspect {MAX_ASPECT_RATIO / max(m.aspect_ratio for m in every):.2f}x\n"
    )

    film = np.asarray(Image.open(sorted((data / "nih_cxr14_dev" / "images").glob("*.png"))[0]), dtype=float) / 255
    columns = ["made-up non-film (8-bit PNG)", "std", "grey levels", "roughness", "detail", "aspect"]
    print(_row(columns + ["fixed", "percentile"]))
    print(_row(["---"] * 8))
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, pixels) in enumerate(non_films(film)):
            path = Path(folder) / f"{index}.png"
            Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)).save(path)
            m = _load(path)
            cells = [name, f"{m.std:.3f}", m.grey_levels, f"{m.roughness:.3f}", f"{m.detail:.3f}"]
            print(_row(cells + [f"{m.aspect_ratio:.3g}", _verdict(m, "fixed"), _verdict(m, "percentile")]))


if __name__ == "__main__":
    main()
