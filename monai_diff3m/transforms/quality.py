"""Input-quality gate: refuse images that cannot be scored as chest X-rays before any network sees them.

A diffusion model reconstructs a blank film almost perfectly, so an all-black or all-white image scored *more
normal* than every real normal; random noise was scored like a film, and so were a smooth grey gradient (it ranked
among the most normal) and a 5000 x 20 strip squashed to a square. The gate measures the loaded image in [0, 1]:
its shape, its number of distinct grey levels, and four numbers on a fixed 64 x 64 area-averaged view (so the
thresholds do not depend on the file's size or the model's ``image_size``; a side shorter than 64 is kept). It
refuses an image when one is far outside what real chest films show:

- ``aspect_ratio`` (long side / short side, in pixels) above :data:`MAX_ASPECT_RATIO`: a strip or a panorama; chest
  film and detector formats lie between 1 and 1.33 (35 x 43 cm, 14 x 17 in, 18 x 24 cm), and the model squashes
  every image to a square;
- ``std`` (contrast) below :data:`MIN_STD`: constant or near-constant (blank, saturated, failed exposure);
- ``mean`` outside :data:`MEAN_RANGE`: almost entirely black or white;
- ``grey_levels`` (distinct intensities, counted at 16-bit resolution) below :data:`MIN_GREY_LEVELS`: a graphic, a
  binary pattern (checkerboard, text) or a faint gradient that rescaling would stretch into bands;
- ``roughness`` (mean absolute difference of neighbouring pixels divided by ``std``) above :data:`MAX_ROUGHNESS`:
  no spatial structure, like noise (independent pixels give about 1.13; anatomy is smooth at 64 x 64);
- ``detail`` (mean absolute Laplacian divided by ``std``) below :data:`MIN_DETAIL`: no edges at all, like a smooth
  gradient (linear, radial, a vignette); ribs, heart borders and lung fields give every real film at least 0.099.

Measured with ``benchmarks/quality_gate.py`` on every real film of ``../shared/data`` (NIH ChestX-ray14: 911 films at
64 x 64 and 599 at 256 x 256; ZhangLab: 1741 films at 256 x 256 and the same at 64 x 64) and on made-up non-films
(``docs/results.md``): ``std`` >= 0.105, ``mean`` in [0.19, 0.79], ``roughness`` <= 0.293, ``detail`` >= 0.099,
``grey_levels`` >= 119, ``aspect_ratio`` 1. Every threshold keeps a margin of at least 2x (1.5x for
``aspect_ratio`` from the 1.33 film formats) from every real film.

With a normalising ``intensity_mode`` (``"percentile"``, ``"histogram"``: the model sees each film rescaled to its
own range) a dark or low-contrast film is legitimate (a 16-bit PNG holding 12-bit values lies below 0.07), so only
the scale-free rules apply: the shape, the grey levels, ``roughness`` and ``detail`` (ratios, unchanged by
rescaling) and a ``std`` below :data:`MIN_STD_NORMALISED`, half an 8-bit grey level, that no rescaling can turn
into a film.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_diff3m.transforms.intensity import INTENSITY_MODES

#: Side of the area-averaged view the statistics are measured on.
QUALITY_VIEW_SIZE = 64
#: Smallest intensity standard deviation of a scorable film (real films: >= 0.107).
MIN_STD = 0.04
#: Smallest standard deviation under a normalising intensity mode: half an 8-bit grey level (constant films).
MIN_STD_NORMALISED = 0.5 / 255
#: Range of the mean intensity of a scorable film (real films: 0.19 to 0.79).
MEAN_RANGE = (0.08, 0.92)
#: Largest neighbour-difference-to-std ratio of a scorable film (real films: <= 0.293; pixel noise: about 1.13).
MAX_ROUGHNESS = 0.6
#: Largest long-side / short-side ratio of a scorable film (film formats: 1 to 1.33; real films here: 1).
MAX_ASPECT_RATIO = 2.0
#: Fewest distinct grey levels of a scorable film (real films: >= 119; a checkerboard 2, a faint 8-bit gradient 12).
MIN_GREY_LEVELS = 32
#: Smallest mean-absolute-Laplacian-to-std ratio of a scorable film (real films: >= 0.099; smooth gradients: <= 0.018).
MIN_DETAIL = 0.04
#: Grey levels are counted on at most this many pixels per side (a regular subsample of larger images).
GREY_LEVEL_SAMPLE_SIZE = 1024


class ImageQualityError(ValueError):
    """An image is not a chest X-ray that can be scored meaningfully; the message names the file and the measure."""


@dataclass(frozen=True)
class ImageQuality:
    """The gate's measurements of one image (see the module docstring)."""

    mean: float
    std: float
    roughness: float
    detail: float
    grey_levels: int
    height: int
    width: int

    @property
    def aspect_ratio(self) -> float:
        """Long side / short side of the loaded image, in pixels."""
        return max(self.height, self.width) / max(1, min(self.height, self.width))


def _grey_levels(pixels: torch.Tensor) -> int:
    """Distinct intensities of a ``(H, W)`` image in [0, 1] at 16-bit resolution (8-bit and 16-bit files exactly),
    on a regular subsample of at most :data:`GREY_LEVEL_SAMPLE_SIZE` pixels per side."""
    stride = max(1, -(-max(pixels.shape) // GREY_LEVEL_SAMPLE_SIZE))
    levels = torch.round(pixels[::stride, ::stride].clamp(0, 1) * 65535).long().flatten()
    return int(torch.count_nonzero(torch.bincount(levels, minlength=65536)))


def measure_image_quality(image: torch.Tensor) -> ImageQuality:
    """The gate's measurements of a ``(1, H, W)`` image in [0, 1]: shape and grey levels of the image itself; mean,
    standard deviation, roughness and detail on its 64 x 64 area view (the image itself along a side shorter than
    64: upsampling would repeat pixels and halve the roughness of noise)."""
    pixels = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).double()
    if pixels.ndim != 3 or pixels.shape[0] != 1:
        raise ValueError(f"expected a (1, H, W) image, got shape {tuple(pixels.shape)}")
    size = (min(QUALITY_VIEW_SIZE, pixels.shape[1]), min(QUALITY_VIEW_SIZE, pixels.shape[2]))
    view = F.interpolate(pixels[None], size=size, mode="area")[0, 0]
    std = float(view.std(unbiased=False))
    steps = torch.cat([(view[1:] - view[:-1]).abs().flatten(), (view[:, 1:] - view[:, :-1]).abs().flatten()])
    laplacian = view[1:-1, 2:] + view[1:-1, :-2] + view[2:, 1:-1] + view[:-2, 1:-1] - 4 * view[1:-1, 1:-1]
    has_inside = min(size) >= 3 and std > 0
    return ImageQuality(
        mean=float(view.mean()),
        std=std,
        roughness=float(steps.mean()) / std if std > 0 else 0.0,
        detail=float(laplacian.abs().mean()) / std if has_inside else 0.0,
        grey_levels=_grey_levels(pixels[0]),
        height=int(pixels.shape[1]),
        width=int(pixels.shape[2]),
    )


def quality_problem(
    quality: ImageQuality,
    min_std: float = MIN_STD,
    mean_range: tuple[float, float] | None = MEAN_RANGE,
    max_roughness: float = MAX_ROUGHNESS,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    min_grey_levels: int = MIN_GREY_LEVELS,
    min_detail: float = MIN_DETAIL,
) -> str | None:
    """Why an image with these measurements cannot be scored, or None when it passes the gate (``mean_range=None``
    skips the mean rule)."""
    if quality.aspect_ratio > max_aspect_ratio:
        return (
            f"it is not shaped like a chest film: {quality.width} x {quality.height} pixels, long side / short side "
            f"{quality.aspect_ratio:.3g} > {max_aspect_ratio:g} (a strip or a panorama; film formats are 1 to 1.33)"
        )
    if quality.std < min_std:
        return f"its intensities are (near-)constant: std {quality.std:.4f} < {min_std:.4g} (blank or saturated film)"
    if mean_range is not None and not mean_range[0] <= quality.mean <= mean_range[1]:
        return f"it is almost entirely black or white: mean intensity {quality.mean:.3f} outside {list(mean_range)}"
    if quality.grey_levels < min_grey_levels:
        return (
            f"it has too few grey levels for a radiograph: {quality.grey_levels} distinct intensities < "
            f"{min_grey_levels} (a graphic, a binary pattern or a faint gradient)"
        )
    if quality.roughness > max_roughness:
        return (
            f"it has no anatomy-like structure: neighbour difference / std = {quality.roughness:.2f} > "
            f"{max_roughness} (noise-like)"
        )
    if quality.detail < min_detail:
        return (
            f"it has no edges, no anatomy: mean |Laplacian| / std = {quality.detail:.3f} < {min_detail} "
            "(a smooth gradient)"
        )
    return None


class CheckImageQualityd(MapTransform):
    """Raise :class:`ImageQualityError` for an image the gate refuses; pass every other record through unchanged.

    Put it right after loading (intensities in [0, 1], before resizing or intensity normalisation): at inference and
    evaluation a refused image becomes a ``failures.csv`` row naming the measure, and every other image is scored.

    Args:
        keys: keys of loaded ``(1, H, W)`` images in [0, 1].
        intensity_mode: the model's ``intensity_mode`` (:data:`~monai_diff3m.transforms.intensity.INTENSITY_MODES`):
            ``"fixed"`` applies every rule; a normalising mode only the scale-free ones (module docstring).
        min_std: smallest standard deviation accepted; default :data:`MIN_STD`, or :data:`MIN_STD_NORMALISED`
            under a normalising mode.
        mean_range: accepted range of the mean intensity (``"fixed"`` mode only).
        max_roughness: largest neighbour-difference-to-std ratio accepted.
        max_aspect_ratio: largest long-side / short-side ratio accepted.
        min_grey_levels: fewest distinct grey levels accepted.
        min_detail: smallest mean-absolute-Laplacian-to-std ratio accepted.
        allow_missing_keys: skip keys absent from the input.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        intensity_mode: str = "fixed",
        min_std: float | None = None,
        mean_range: Sequence[float] = MEAN_RANGE,
        max_roughness: float = MAX_ROUGHNESS,
        max_aspect_ratio: float = MAX_ASPECT_RATIO,
        min_grey_levels: int = MIN_GREY_LEVELS,
        min_detail: float = MIN_DETAIL,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if intensity_mode not in INTENSITY_MODES:
            raise ValueError(f"intensity_mode must be one of {INTENSITY_MODES}, got {intensity_mode!r}")
        fixed = intensity_mode == "fixed"
        self.min_std = (MIN_STD if fixed else MIN_STD_NORMALISED) if min_std is None else min_std
        self.mean_range = (float(mean_range[0]), float(mean_range[1])) if fixed else None
        self.max_roughness = max_roughness
        self.max_aspect_ratio = max_aspect_ratio
        self.min_grey_levels = min_grey_levels
        self.min_detail = min_detail

    def __call__(self, data: Mapping[Hashable, object]) -> Mapping[Hashable, object]:
        for key in self.key_iterator(dict(data)):
            image = cast(torch.Tensor, data[key])
            problem = quality_problem(
                measure_image_quality(image),
                self.min_std,
                self.mean_range,
                self.max_roughness,
                self.max_aspect_ratio,
                self.min_grey_levels,
                self.min_detail,
            )
            if problem:
                name = image.meta.get("filename_or_obj", key) if isinstance(image, MetaTensor) else key
                raise ImageQualityError(f"image {name} is not a chest X-ray that can be scored: {problem}")
        return data
