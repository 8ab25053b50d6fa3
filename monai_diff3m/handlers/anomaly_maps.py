"""Per-image anomaly map files: the map at the film's own size and spacing, as NIfTI and as an overlay PNG.

The model's map comes at the model's resolution; a reader of the results wants it on the film they have, so each map
is brought back to the film's size (bilinear) and written with the film's affine (its pixel spacing). Both files
are written to a temporary name and renamed, so a killed run never leaves half a map under a name a table points at.

Why nibabel rather than MONAI's ``SaveImage``: ``SaveImage`` reports any failed write (a full disk) as "cannot find
a suitable writer", while the ``failures.csv`` row of a map must name the real cause; its folder layout writes onto the
final name, not to a temporary file renamed once complete; and MONAI 1.6's NIfTI writer fails on a 2D image unless
told to resample it onto its own affine. nibabel, which MONAI's NIfTI writer calls, writes the same file in one call.
The overlay is drawn with MONAI's ``blend_images`` (``reports.figures.map_overlay``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.spatialimages import HeaderDataError

from monai_diff3m.io import atomic_path
from monai_diff3m.reports.figures import map_overlay, overlay_with_legend, to_gray
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE, read_chest_xray

#: The ``scores.csv`` columns naming each image's map files, relative to the output folder.
MAP_COLUMNS = ("map_nifti", "map_overlay")
#: What a map that cannot be written raises: a full disk or unwritable folder, a film that cannot be re-read, an
#: affine NIfTI cannot hold. The caller keeps the image's scores and reports the map as not written.
MAP_WRITE_ERRORS = (OSError, ValueError, HeaderDataError)
#: Default full-colour value of the maps, as a fraction of the width of the image range.
MAP_MAX_FRACTION = 0.25


def default_map_max(image_range: Sequence[float]) -> float:
    """The map value drawn at full colour when none is given: a quarter of the width of the image range."""
    low, high = (float(bound) for bound in image_range)
    return MAP_MAX_FRACTION * (high - low)


class AnomalyMapWriter:
    """Write one image's anomaly map as ``maps/<name>.nii.gz`` and ``overlays/<name>.png`` in ``output_dir``.

    Not an engine handler: the ``ScoreTableWriter`` calls :meth:`write` for each row it writes, so the row gets the
    map's file names, or, when the map cannot be written, keeps its scores and records the failure; there is no
    second handler whose order on the engine would decide whether a row sees its maps.

    Args:
        output_dir: the run's output folder.
        image_range: intensity range of the scored images; the legend states the map values in its units.
        map_max: map value (intensity units) drawn at full colour on every film; default a quarter of the range.
    """

    def __init__(
        self,
        output_dir: str | Path,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        map_max: float | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.image_range = tuple(float(bound) for bound in image_range)
        self.map_max = default_map_max(self.image_range) if map_max is None else float(map_max)

    @property
    def intensity_units(self) -> str:
        """How a map value reads: the film's gray range spans ``image_range``."""
        low, high = self.image_range
        return f"film gray range = [{low:g}, {high:g}]"

    def write(self, name: str, image_path: str, anomaly_map: np.ndarray, title: str) -> dict[str, str]:
        """Write the map of the film at ``image_path`` (re-read for its size, spacing and gray values) under ``name``
        and return its ``MAP_COLUMNS``; raises one of ``MAP_WRITE_ERRORS`` when it cannot.

        Args:
            name: the file stem, unique among the run's images (the caller's choice).
            image_path: the scored film.
            anomaly_map: the (H, W) map at the model's resolution.
            title: the overlay's title line (the film and its score).
        """
        film = read_chest_xray(image_path)
        height, width = film.shape[1:]
        full_map = torch.nn.functional.interpolate(
            torch.from_numpy(anomaly_map)[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        files = {"map_nifti": f"maps/{name}.nii.gz", "map_overlay": f"overlays/{name}.png"}
        nifti_path = self.output_dir / files["map_nifti"]
        nifti_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(nifti_path) as temporary:
            nib.save(nib.Nifti1Image(full_map.astype(np.float32), film.affine.numpy()), str(temporary))
        overlay = map_overlay(to_gray(film[0].numpy()), full_map, self.map_max)
        figure = overlay_with_legend(overlay, self.map_max, title, units=self.intensity_units)
        overlay_path = self.output_dir / files["map_overlay"]
        overlay_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(overlay_path) as temporary:
            figure.save(temporary, format="PNG")
        return files
