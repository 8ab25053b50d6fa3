"""Map a loaded chest X-ray from [0, 1] to the diffusion model's range [−1, 1], optionally normalising it first.

Real films differ in exposure, detector, bit depth and windowing: an 8-bit PNG export, a 16-bit PNG holding 12-bit
values (the whole image below 0.07 after dividing by 65535) and a DICOM scaled by its stored bits can show the same
anatomy at very different grey levels. The anomaly score is a pixel difference, so these global differences would
be scored as anomalies. The modes:

- ``"fixed"``: x ↦ 2x − 1, the intensities as loaded (phantoms, and datasets exported with one consistent window).
- ``"percentile"``: the image's ``lower``-th and ``upper``-th intensity percentiles go to −1 and 1 (clipped):
  invariant to any increasing linear rescale of the film, so bit depth and global exposure no longer matter.
- ``"histogram"``: histogram equalisation (each pixel becomes its intensity rank), invariant to any increasing
  intensity mapping, at the cost of the film's own contrast.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import (
    HistogramNormalized,
    MapTransform,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

INTENSITY_MODES = ("fixed", "percentile", "histogram")


class NormaliseChestXRayd(MapTransform):
    """Bring images under ``keys`` from [0, 1] to [−1, 1] with one of :data:`INTENSITY_MODES` (module docstring).

    Args:
        keys: image keys.
        mode: ``"fixed"``, ``"percentile"`` or ``"histogram"``.
        lower, upper: percentiles mapped to −1 and 1 in ``"percentile"`` mode.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "percentile",
        lower: float = 1.0,
        upper: float = 99.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in INTENSITY_MODES:
            raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {mode!r}")
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.mode = mode
        if mode == "fixed":
            self.transform: MapTransform = ScaleIntensityRanged(
                keys, a_min=0.0, a_max=1.0, b_min=-1.0, b_max=1.0, clip=True, allow_missing_keys=allow_missing_keys
            )
        elif mode == "percentile":
            self.transform = ScaleIntensityRangePercentilesd(
                keys, lower=lower, upper=upper, b_min=-1.0, b_max=1.0, clip=True, allow_missing_keys=allow_missing_keys
            )
        else:
            self.transform = HistogramNormalized(
                keys, num_bins=256, min=-1, max=1, allow_missing_keys=allow_missing_keys
            )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        return dict(self.transform(data))
