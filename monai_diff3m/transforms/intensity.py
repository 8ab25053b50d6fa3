"""Map a loaded chest X-ray from [0, 1] to the diffusion model's range, optionally normalising it first.

The range is ``output_range``: [−1, 1] by default (the bundles' ``image_range``); the authors' code feeds [0, 1]
(``ToTensor``) with no normalisation, which is ``mode="fixed"``, ``output_range=(0, 1)``.

Real films differ in exposure, detector, bit depth and windowing: an 8-bit PNG export, a 16-bit PNG holding 12-bit
values (the whole image below 0.07 after dividing by 65535) and a DICOM scaled by its stored bits can show the same
anatomy at very different grey levels. The anomaly score is a pixel difference, so these global differences would
be scored as anomalies. The modes:

- ``"fixed"``: [0, 1] ↦ the output range linearly (x ↦ 2x − 1 for [−1, 1]), the intensities as loaded (phantoms,
  and datasets exported with one consistent window).
- ``"percentile"``: the image's ``lower``-th and ``upper``-th intensity percentiles go to the range's ends (clipped):
  invariant to any increasing linear rescale of the film, so bit depth and global exposure no longer matter.
- ``"histogram"``: histogram equalisation (each pixel becomes its intensity rank), invariant to any increasing
  intensity mapping, at the cost of the film's own contrast.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import (
    HistogramNormalized,
    MapTransform,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE

INTENSITY_MODES = ("fixed", "percentile", "histogram")


class NormaliseChestXRayd(MapTransform):
    """Bring images under ``keys`` from [0, 1] to ``output_range`` with one of :data:`INTENSITY_MODES` (see module).

    Args:
        keys: image keys.
        mode: ``"fixed"``, ``"percentile"`` or ``"histogram"``.
        lower, upper: percentiles mapped to the ends of ``output_range`` in ``"percentile"`` mode.
        allow_missing_keys: skip absent keys.
        output_range: (low, high) of the images the diffusion model works on.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "percentile",
        lower: float = 1.0,
        upper: float = 99.0,
        allow_missing_keys: bool = False,
        output_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in INTENSITY_MODES:
            raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {mode!r}")
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        low, high = (float(bound) for bound in output_range)
        if not high > low:
            raise ValueError(f"output_range must be (low, high) with high > low, got {tuple(output_range)}")
        self.mode = mode
        if mode == "fixed":
            self.transform: MapTransform = ScaleIntensityRanged(
                keys, a_min=0.0, a_max=1.0, b_min=low, b_max=high, clip=True, allow_missing_keys=allow_missing_keys
            )
        elif mode == "percentile":
            self.transform = ScaleIntensityRangePercentilesd(
                keys, lower=lower, upper=upper, b_min=low, b_max=high, clip=True, allow_missing_keys=allow_missing_keys
            )
        else:
            # MONAI annotates min/max as int but scales to any float range
            self.transform = HistogramNormalized(
                keys,
                num_bins=256,
                min=low,  # type: ignore[arg-type]
                max=high,  # type: ignore[arg-type]
                allow_missing_keys=allow_missing_keys,
            )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        return dict(self.transform(data))
