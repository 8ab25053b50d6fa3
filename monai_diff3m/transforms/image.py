"""Load chest X-rays (PNG, JPEG, DICOM) as channel-first MetaTensors with intensities in [0, 1].

MONAI's ``LoadImage`` needs ITK for PNG and does not apply the DICOM display rules a radiograph needs (rescale,
MONOCHROME1 inversion), so this module reads PNG/JPEG with Pillow and DICOM with pydicom. Every image becomes a
float32 ``(1, H, W)`` tensor: axis 1 runs over rows, axis 2 over columns, exactly as the file stores them (no
transpose). ``spacing`` holds (row, column) spacing in mm and the affine carries the same diagonal, so
anomaly maps written later with MONAI's NIfTI writer keep the detector's pixel size (MONAI 1.6's ``SaveImage``
cannot write a 2D image: append a singleton axis, ``image[..., None]``, with ``squeeze_end_dims=False``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.pixels import apply_modality_lut

#: Suffixes read as DICOM without a content check; other files are DICOM only if they carry the ``DICM`` preamble.
DICOM_SUFFIXES = (".dcm", ".dicom")

#: ITU-R BT.601 luma weights, the ones Pillow's ``convert("L")`` uses; applied in float to avoid 8-bit rounding.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_PIL_GRAY_8BIT = ("L",)
_PIL_GRAY_16BIT = ("I;16", "I;16B", "I")
_PIL_COLOUR = ("RGB", "RGBA", "LA", "P")


class ImageLoadError(ValueError):
    """A chest X-ray file exists but cannot be turned into a 2D grayscale image; the message names the file."""


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM: a ``.dcm``/``.dicom`` suffix or pydicom's ``DICM`` preamble check."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom(Path(path))


def _pil_to_unit(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG into [0, 1]: 8-bit /255, 16-bit /65535, colour modes reduced to BT.601 luma (alpha ignored)."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in _PIL_GRAY_8BIT:
                return np.asarray(img, dtype=np.float64) / 255.0
            if mode in _PIL_GRAY_16BIT:
                values = np.asarray(img, dtype=np.float64)
                if values.min() < 0 or values.max() > 65535:
                    raise ImageLoadError(
                        f"image {path}: mode {mode} holds values in [{values.min()}, {values.max()}], "
                        "expected 16-bit gray values in [0, 65535]"
                    )
                return values / 65535.0
            if mode in _PIL_COLOUR:
                rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
                return rgb @ _LUMA_WEIGHTS / 255.0
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, EOFError) as err:  # Pillow reports broken and truncated files with all three
        raise ImageLoadError(f"cannot decode image {path}: {err}") from err
    raise ImageLoadError(
        f"image {path} has unsupported PIL mode {mode!r}; expected gray {_PIL_GRAY_8BIT + _PIL_GRAY_16BIT} "
        f"or colour {_PIL_COLOUR}"
    )


def _dicom_spacing(ds: pydicom.Dataset, path: str | os.PathLike) -> tuple[float, float]:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing, else (1.0, 1.0)."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is None or value == "":
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError) as err:
            raise ImageLoadError(f"DICOM {path}: {tag} = {value!r}, expected two numbers (row, column) in mm") from err
        if row <= 0 or col <= 0:
            raise ImageLoadError(f"DICOM {path}: {tag} = {value!r}, expected positive spacings in mm")
        return row, col
    return 1.0, 1.0


def _dicom_stored_range(bits: int, signed: bool) -> np.ndarray:
    """The smallest and largest value a pixel with ``bits`` stored bits can hold (two's complement if ``signed``)."""
    if signed:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.float64)
    return np.array([0, 2**bits - 1], dtype=np.float64)


def _dicom_to_unit(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
    """Read a single-frame grayscale DICOM into [0, 1] with bone bright, plus its (row, column) spacing.

    The modality LUT (RescaleSlope/Intercept) is applied to the pixels and to the BitsStored range alike and the
    image is scaled by that rescaled range, so [0, 1] spans the detector's full range whatever the rescale (a
    negative slope flips the image); without BitsStored the image is min-max scaled.
    """
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError) as err:
        raise ImageLoadError(f"cannot decode DICOM {path}: {err}") from err
    if "PixelData" not in ds:
        raise ImageLoadError(f"DICOM {path} has no PixelData: it is not an image (SOP class {ds.get('SOPClassUID')})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ImageLoadError(f"DICOM {path} has NumberOfFrames = {frames}; expected a single-frame radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageLoadError(
            f"DICOM {path} has PhotometricInterpretation = {photometric!r}; expected MONOCHROME1 or MONOCHROME2"
        )
    bits = ds.get("BitsStored")
    if not bits:
        ds.BitsStored = ds.get("BitsAllocated")  # pydicom cannot decode without it; scaling falls back to min-max
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for unsupported or broken pixel data
        raise ImageLoadError(
            f"cannot decode image {path}: DICOM pixel data with transfer syntax "
            f"{ds.file_meta.get('TransferSyntaxUID')}: {err}"
        ) from err
    if stored.ndim != 2:
        raise ImageLoadError(f"DICOM {path} has pixel array of shape {stored.shape}; expected 2D (rows, columns)")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if bits:
        bounds = _dicom_stored_range(bits, signed=ds.get("PixelRepresentation", 0) == 1)
        rescaled = np.asarray(apply_modality_lut(bounds, ds), dtype=np.float64)
        low, high = rescaled.min(), rescaled.max()
    else:
        low, high = values.min(), values.max()
    unit = np.zeros_like(values) if high <= low else np.clip((values - low) / (high - low), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit, _dicom_spacing(ds, path)


def read_chest_xray(path: str | os.PathLike) -> MetaTensor:
    """Read one chest X-ray as a float32 ``(1, H, W)`` MetaTensor in [0, 1] with spacing metadata.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the file cannot be decoded or is not a single 2D grayscale/colour image.
    """
    if is_dicom_file(path):
        unit, spacing = _dicom_to_unit(path)
    else:
        unit, spacing = _pil_to_unit(path), (1.0, 1.0)
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0, 1.0], dtype=torch.float64))
    meta = {
        "filename_or_obj": str(path),
        "spacing": np.array(spacing),
        "spatial_shape": np.array(unit.shape),
    }
    return MetaTensor(torch.from_numpy(unit[None].astype(np.float32)), affine=affine, meta=meta)


class LoadChestXRayd(MapTransform):
    """Replace the file path under each key with the chest X-ray it names (see :func:`read_chest_xray`).

    Like MONAI's ``LoadImaged`` it returns a new dict and leaves the input untouched, so a dataset's list of
    path records can be cached and reused.

    Args:
        keys: keys whose values are paths to PNG, JPEG or DICOM files.
        allow_missing_keys: skip keys absent from the input instead of raising ``KeyError``.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"chest X-ray file {str(path)!r} under key {key!r} does not exist")
            d[key] = read_chest_xray(path)
        return d
