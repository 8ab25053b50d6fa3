"""The map writer gives each film its map at the film's own size and pixel spacing, and never half a file."""

from __future__ import annotations

import errno

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_diff3m.handlers import AnomalyMapWriter, anomaly_maps

from dicom_files import write_dicom


def test_the_map_comes_at_the_films_size_and_spacing(tmp_path):
    film = write_dicom(tmp_path / "film.dcm", PixelSpacing=[0.2, 0.3])  # 16 x 16 pixels
    anomaly_map = np.zeros((8, 8), dtype=np.float32)
    anomaly_map[2:4, 2:4] = 0.5

    files = AnomalyMapWriter(tmp_path / "out").write("film", str(film), anomaly_map, title="film.dcm")

    assert files == {"map_nifti": "maps/film.nii.gz", "map_overlay": "overlays/film.png"}
    nifti = nib.load(tmp_path / "out" / files["map_nifti"])
    assert nifti.shape == (16, 16) and nifti.header.get_zooms() == pytest.approx((0.2, 0.3))
    assert nifti.get_fdata().max() > 0.25 and nifti.get_fdata()[12:, 12:].max() == 0
    overlay = Image.open(tmp_path / "out" / files["map_overlay"])
    assert overlay.width == 16 and overlay.height > 16  # the film under a title, above a colour bar


def test_a_map_that_cannot_be_written_leaves_no_file_and_keeps_its_error(tmp_path, monkeypatch):
    """The failure row must name the cause (a full disk), and no table may point at half a map."""
    film = tmp_path / "film.png"
    Image.new("L", (8, 8), 128).save(film)

    def full_disk(image, path):
        with open(path, "wb") as handle:
            handle.write(b"half a map")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(anomaly_maps.nib, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        AnomalyMapWriter(tmp_path / "out").write("film", str(film), np.zeros((4, 4), np.float32), title="film.png")
    assert list((tmp_path / "out" / "maps").iterdir()) == []
