"""Input-quality gate: refuse images that cannot be scored as chest X-rays before any network sees them.

A diffusion model reconstructs a blank film almost perfectly, so an all-black or all-white image scored *more
normal* than every real normal; random noise was scored like a film. The gate measures three numbers on a fixed
64 x 64 area-averaged view of the loaded image in [0, 1] (so the thresholds do not depend on the file's size or the
model's ``image_size``; a side shorter than 64 is kept) and refuses an image when one is far outside what real chest
films show:

- ``std`` (contrast) below :data:`MIN_STD`: constant or near-constant (blank, saturated, failed exposure);
- ``mean`` outside :data:`MEAN_RANGE`: almost entirely black or white;
- ``roughness`` (mean absolute difference of neighbouring pixels divided by ``std``) above :data:`MAX_ROUGHNESS`:
  no spatial structure, like noise (independent pixels give about 1.13; anatomy is smooth at 64 x 64).

Measured on every real film of ``../shared/data`` (NIH ChestX-ray14: 911 films at 64 x 64 and 599 at 256 x 256,
561 normals) and on 700 phantoms: ``std`` >= 0.107, ``mean`` in [0.19, 0.79], ``roughness`` <= 0.248; the thresholds
keep a margin of at least 2.4x (``std``, ``roughness``) and 0.11 (``mean``) from every one of them (bundle docs).

With a normalising ``intensity_mode`` (``"percentile"``, ``"histogram"``: the model sees each film rescaled to its
own range) a dark or low-contrast film is legitimate (a 16-bit PNG holding 12-bit values lies below 0.07), so only
the scale-free rules apply: ``roughness`` (a ratio, unchanged by rescaling) and a ``std`` below
:data:`MIN_STD_NORMALISED`, half an 8-bit grey level, that no rescaling can turn into a film.
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
#: Largest neighbour-difference-to-std ratio of a scorable film (real films: <= 0.248; pixel noise: about 1.13).
MAX_ROUGHNESS = 0.6


class ImageQualityError(ValueError):
    """An image is not a chest X-ray that can be scored meaningfully; the message names the file and the measure."""


@dataclass(frozen=True)
class ImageQuality:
    """The gate's measurements of one image (see the module docstring)."""

    mean: float
    std: float
    roughness: float


def measure_image_quality(image: torch.Tensor) -> ImageQuality:
    """Mean, standard deviation and roughness of a ``(1, H, W)`` image in [0, 1] on its 64 x 64 area view (the image
    itself along a side shorter than 64: upsampling would repeat pixels and halve the roughness of noise)."""
    pixels = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).double()
    if pixels.ndim != 3 or pixels.shape[0] != 1:
        raise ValueError(f"expected a (1, H, W) image, got shape {tuple(pixels.shape)}")
    size = (min(QUALITY_VIEW_SIZE, pixels.shape[1]), min(QUALITY_VIEW_SIZE, pixels.shape[2]))
    view = F.interpolate(pixels[None], size=size, mode="area")[0, 0]
    std = float(view.std(unbiased=False))
    steps = torch.cat([(view[1:] - view[:-1]).abs().flatten(), (view[:, 1:] - view[:, :-1]).abs().flatten()])
    roughness = float(steps.mean()) / std if std > 0 else 0.0
    return ImageQuality(mean=float(view.mean()), std=std, roughness=roughness)


def quality_problem(
    quality: ImageQuality,
    min_std: float = MIN_STD,
    mean_range: tuple[float, float] | None = MEAN_RANGE,
    max_roughness: float = MAX_ROUGHNESS,
) -> str | None:
    """Why an image with these measurements cannot be scored, or None when it passes the gate (``mean_range=None``
    skips the mean rule)."""
    if quality.std < min_std:
        return f"its intensities are (near-)constant: std {quality.std:.4f} < {min_std:.4g} (blank or saturated film)"
    if mean_range is not None and not mean_range[0] <= quality.mean <= mean_range[1]:
        return f"it is almost entirely black or white: mean intensity {quality.mean:.3f} outside {list(mean_range)}"
    if quality.roughness > max_roughness:
        return (
            f"it has no anatomy-like structure: neighbour difference / std = {quality.roughness:.2f} > "
            f"{max_roughness} (noise-like)"
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
        allow_missing_keys: skip keys absent from the input.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        intensity_mode: str = "fixed",
        min_std: float | None = None,
        mean_range: Sequence[float] = MEAN_RANGE,
        max_roughness: float = MAX_ROUGHNESS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if intensity_mode not in INTENSITY_MODES:
            raise ValueError(f"intensity_mode must be one of {INTENSITY_MODES}, got {intensity_mode!r}")
        fixed = intensity_mode == "fixed"
        self.min_std = (MIN_STD if fixed else MIN_STD_NORMALISED) if min_std is None else min_std
        self.mean_range = (float(mean_range[0]), float(mean_range[1])) if fixed else None
        self.max_roughness = max_roughness

    def __call__(self, data: Mapping[Hashable, object]) -> Mapping[Hashable, object]:
        for key in self.key_iterator(dict(data)):
            image = cast(torch.Tensor, data[key])
            problem = quality_problem(measure_image_quality(image), self.min_std, self.mean_range, self.max_roughness)
            if problem:
                name = image.meta.get("filename_or_obj", key) if isinstance(image, MetaTensor) else key
                raise ImageQualityError(f"image {name} is not a chest X-ray that can be scored: {problem}")
        return data
