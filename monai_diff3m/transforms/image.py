"""Load chest X-rays (PNG, JPEG, DICOM) as channel-first MetaTensors with intensities in [0, 1].

Kept instead of MONAI's ``LoadImage(reader=PILReader())``: a converter would redo the EXIF orientation, 16-bit
scaling, BT.601 luma and size limit below, and ``LoadImage`` reports a broken file as "cannot find a suitable
reader" (``RuntimeError``) instead of naming the problem; MONAI's DICOM readers do not apply the display rules a
radiograph needs (modality LUT, VOI window or LUT, presentation LUT, MONOCHROME1 inversion). So this module reads
PNG/JPEG with Pillow and DICOM with pydicom: an image is read as it is displayed, so one film scores the same
whatever encoding carries it. Every image becomes a float32 ``(1, H, W)`` tensor: axis 1 runs over rows, axis 2 over
columns, as displayed (the EXIF orientation of a PNG/JPEG is applied; DICOM pixels are never transposed).
``spacing`` holds (row, column) spacing in mm and the affine carries the same diagonal, so anomaly maps written
with the film's affine (``handlers.anomaly_maps``) keep the detector's pixel size.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image, ImageOps
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

#: Intensity range the diffusion model works in by default (``NormaliseChestXRayd`` maps the loaded [0, 1] to it).
#: The authors' code feeds [0, 1] (``ToTensor``); the bundles' ``image_range`` switch chooses.
DIFFUSION_IMAGE_RANGE = (-1.0, 1.0)

#: Suffixes read as DICOM without a content check; other files are DICOM if they carry the ``DICM`` preamble or
#: start like a bare DICOM data set (see :func:`is_dicom_file`).
DICOM_SUFFIXES = (".dcm", ".dicom")
#: Largest image read, in pixels (8192 x 8192: twice the side of the largest chest detectors). Larger files are
#: refused from their header, before decoding, so one huge or forged file cannot exhaust memory.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Groups a bare DICOM data set (no preamble) starts with: file meta (0002) or identifying elements (0008).
_BARE_DICOM_GROUPS = (0x0002, 0x0008)

#: ITU-R BT.601 luma weights, the ones Pillow's ``convert("L")`` uses; applied in float to avoid 8-bit rounding.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_PIL_GRAY_8BIT = ("L",)
_PIL_GRAY_16BIT = ("I;16", "I;16B", "I")
_PIL_COLOUR = ("RGB", "RGBA", "LA", "P")


class ImageLoadError(ValueError):
    """A chest X-ray file exists but cannot be turned into a 2D grayscale image; the message names the file."""


def _is_bare_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a DICOM data set written without the 128-byte preamble and ``DICM`` prefix
    (pre-Part-10 files, some PACS exports): a little-endian group 0002/0008 tag followed by an explicit VR or an
    implicit length that fits in the file."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        return False
    group, _ = struct.unpack("<HH", head[:4])
    explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
    return group in _BARE_DICOM_GROUPS and (explicit_vr or struct.unpack("<I", head[4:])[0] <= os.path.getsize(path))


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM: a ``.dcm``/``.dicom`` suffix, pydicom's ``DICM`` preamble check, or the
    start of a bare DICOM data set (no preamble, no suffix)."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom(Path(path)) or _is_bare_dicom(path)


def read_dicom_dataset(path: str | os.PathLike, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Read a Part-10 DICOM file or a bare data set without preamble (given the transfer syntax pydicom detected,
    so its pixels decode).

    Raises:
        ImageLoadError: the file is not readable DICOM; the message names it.
    """
    bare = os.path.isfile(path) and not is_dicom(Path(path)) and _is_bare_dicom(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=bare)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, struct.error) as err:
        raise ImageLoadError(f"cannot decode DICOM {path}: {err}") from err
    if bare and "TransferSyntaxUID" not in ds.file_meta:
        implicit, _ = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


def _check_pixel_count(path: str | os.PathLike, rows: int, columns: int) -> None:
    if rows * columns > MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            f"image {path} is {columns} x {rows} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels "
            f"(MAX_IMAGE_PIXELS): not a chest X-ray this loader reads; downsample it first"
        )


def _pil_to_unit(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG into [0, 1] as displayed: EXIF orientation applied, 8-bit /255, 16-bit /65535, colour modes
    reduced to BT.601 luma (alpha ignored)."""
    try:
        with Image.open(path) as opened:
            _check_pixel_count(path, opened.height, opened.width)
            opened.load()
            img = ImageOps.exif_transpose(opened)
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
    except Image.DecompressionBombError as err:  # Pillow refuses at open what is far above its own limit
        raise ImageLoadError(
            f"image {path} is above the limit of {MAX_IMAGE_PIXELS} pixels (MAX_IMAGE_PIXELS): {err}"
        ) from err
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
        if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
            raise ImageLoadError(f"DICOM {path}: {tag} = {value!r}, expected two positive finite spacings in mm")
        return row, col
    return 1.0, 1.0


def _dicom_stored_range(bits: int, signed: bool) -> np.ndarray:
    """The smallest and largest value a pixel with ``bits`` stored bits can hold (two's complement if ``signed``)."""
    if signed:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.float64)
    return np.array([0, 2**bits - 1], dtype=np.float64)


def _finite_number(ds: pydicom.Dataset, tag: str, path: str | os.PathLike) -> float | None:
    """A single numeric tag as a finite float (None when absent); a non-finite value is an ``ImageLoadError``."""
    value = ds.get(tag)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ImageLoadError(f"DICOM {path}: {tag} = {value!r}, expected a number") from err
    if not math.isfinite(number):
        raise ImageLoadError(f"DICOM {path}: {tag} = {value!r}, expected a finite number")
    return number


def _modality_values(
    stored: np.ndarray, ds: pydicom.Dataset, path: str | os.PathLike, bits_given: bool
) -> tuple[np.ndarray, float, float]:
    """Pixels through the modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), with the range the
    BitsStored range maps to (a negative slope flips it); without BitsStored, the image's own min and max."""
    slope = _finite_number(ds, "RescaleSlope", path)
    _finite_number(ds, "RescaleIntercept", path)
    if slope == 0:
        raise ImageLoadError(
            f"DICOM {path}: RescaleSlope = 0 maps every pixel to RescaleIntercept, so the image is blank: "
            "the header is damaged"
        )
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if not bits_given:
        return values, float(values.min()), float(values.max())
    bounds = _dicom_stored_range(int(ds.BitsStored), signed=ds.get("PixelRepresentation", 0) == 1)
    rescaled = np.asarray(apply_modality_lut(bounds, ds), dtype=np.float64)
    return values, float(rescaled.min()), float(rescaled.max())


def _voi_values(
    values: np.ndarray, low: float, high: float, ds: pydicom.Dataset, path: str | os.PathLike
) -> tuple[np.ndarray, float, float]:
    """Modality values through the VOI transform as pydicom's ``apply_voi_lut(index=0, prefer_lut=True)`` defines
    it, with its output range: the first VOI LUT of the VOI LUT Sequence if there is one, else the first
    WindowCenter/WindowWidth pair (several pairs are alternative views; the first is the one shown by default),
    else no VOI transform and the modality range."""
    luts = ds.get("VOILUTSequence")
    try:
        if luts and luts[0].get("LUTDescriptor") is not None and luts[0].get("LUTData") is not None:
            bits = int(luts[0].LUTDescriptor[2])
            return np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, 0), np.float64), 0.0, 2.0**bits - 1
        if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
            for tag in ("WindowCenter", "WindowWidth"):
                element = ds[tag]
                first = element.value[0] if element.VM > 1 else element.value
                if not math.isfinite(float(first)):
                    raise ImageLoadError(f"DICOM {path}: {tag} = {element.value!r}, expected finite numbers")
            window_low, window_high = apply_windowing(np.array([-np.inf, np.inf]), ds, 0)
            return np.asarray(apply_windowing(values, ds, 0), np.float64), float(window_low), float(window_high)
    except (ValueError, TypeError, IndexError, NotImplementedError, AttributeError) as err:
        raise ImageLoadError(f"DICOM {path}: VOI LUT / window cannot be applied: {err}") from err
    return values, low, high


def _inverted_for_display(ds: pydicom.Dataset, photometric: str, path: str | os.PathLike) -> bool:
    """Whether the lowest VOI output is shown white: MONOCHROME1, or Presentation LUT Shape ``INVERSE`` (for a
    MONOCHROME1 DX image INVERSE is how the standard spells that same single inversion, so it is not applied twice)."""
    if "PresentationLUTSequence" in ds:
        raise ImageLoadError(f"DICOM {path} has a Presentation LUT Sequence; only Presentation LUT Shape is supported")
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if shape not in ("", "IDENTITY", "INVERSE"):
        raise ImageLoadError(f"DICOM {path}: PresentationLUTShape = {shape!r}, expected IDENTITY or INVERSE")
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def _dicom_to_unit(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
    """Read a single-frame grayscale DICOM into [0, 1] as it is displayed (bone bright), plus its (row, column)
    spacing: modality LUT, then VOI LUT or window, scaled by that transform's output range, then inverted for
    MONOCHROME1 or an INVERSE presentation LUT shape. Without a VOI transform the range is the rescaled BitsStored
    range, so [0, 1] spans the detector's full range (min-max without BitsStored)."""
    ds = read_dicom_dataset(path)
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
    _check_pixel_count(path, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    invert = _inverted_for_display(ds, photometric, path)
    bits_given = bool(ds.get("BitsStored"))
    if not bits_given:
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
    values, low, high = _modality_values(stored, ds, path, bits_given)
    values, low, high = _voi_values(values, low, high, ds, path)
    span = high - low
    unit = np.zeros_like(values) if span == 0 else np.clip((values - low) / span, 0.0, 1.0)
    if invert:
        unit = 1.0 - unit
    return unit, _dicom_spacing(ds, path)


def read_chest_xray(path: str | os.PathLike) -> MetaTensor:
    """Read one chest X-ray as a float32 ``(1, H, W)`` MetaTensor in [0, 1] with spacing metadata.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the file cannot be decoded, is larger than ``MAX_IMAGE_PIXELS``, has unusable header
            values (spacing, rescale, window) or is not a single 2D grayscale/colour image.
    """
    if is_dicom_file(path):
        unit, spacing = _dicom_to_unit(path)
    else:
        unit, spacing = _pil_to_unit(path), (1.0, 1.0)
    if not np.isfinite(unit).all():
        raise ImageLoadError(f"image {path} has non-finite pixel values (NaN or infinity) after decoding")
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
