"""Tiny DICOM files for tests: real headers and pixel data written with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

RAMP = (np.arange(256).reshape(16, 16) * 16).astype(np.uint16)  # 0 .. 4080, inside 12 stored bits


def write_dicom(
    path: Path, pixels: np.ndarray = RAMP, bits_stored: int = 12, image: bool = True, bare: bool = False, **tags
) -> Path:
    """A minimal DX DICOM with uint16 pixels (or, with ``image=False``, a header without Rows/Columns/PixelData).

    ``tags`` set header elements, or delete them when the value is None. ``bare=True`` writes the data set alone in
    implicit VR little endian, without preamble, ``DICM`` prefix and file meta (pre-Part-10 files, some PACS exports).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if image:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
    for name, value in tags.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bare:
        del ds.file_meta
        dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:
        ds.save_as(path, enforce_file_format=True)
    return path
