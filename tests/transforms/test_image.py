"""LoadChestXRayd: PNG/JPEG/DICOM decoding, intensity scaling, spacing metadata and named errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.dataset import Dataset

from monai_diff3m.transforms.image import (
    MAX_IMAGE_PIXELS,
    ImageLoadError,
    LoadChestXRayd,
    is_dicom_file,
    read_chest_xray,
)

from dicom_files import RAMP, write_dicom


def load(path):
    return LoadChestXRayd(keys="image")({"image": path})["image"]


def test_8bit_png_values_exact_and_layout(tmp_path):
    pixels = np.array([[0, 51, 255], [102, 204, 255]], dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(pixels).save(path)
    image = load(str(path))
    assert isinstance(image, MetaTensor)
    assert image.shape == (1, 2, 3) and image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), [[0.0, 0.2, 1.0], [0.4, 0.8, 1.0]], atol=1e-7)
    assert image.meta["filename_or_obj"] == str(path)
    np.testing.assert_array_equal(image.meta["spacing"], [1.0, 1.0])
    np.testing.assert_array_equal(image.meta["spacing"], [1.0, 1.0])


def test_16bit_png_divided_by_65535(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 13107], [65535, 32768]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_allclose(load(path)[0].numpy(), [[0.0, 0.2], [1.0, 32768 / 65535]], atol=1e-7)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_becomes_bt601_luma_ignoring_alpha(tmp_path, mode):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    pixels = rgb if mode == "RGB" else np.concatenate([rgb, np.full((2, 2, 1), 7, np.uint8)], axis=-1)
    path = tmp_path / f"{mode}.png"
    Image.fromarray(pixels, mode).save(path)
    np.testing.assert_allclose(load(path)[0].numpy(), [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)


def test_gray_with_alpha_and_palette_keep_gray_values(tmp_path):
    Image.fromarray(np.dstack([np.full((2, 2), 51, np.uint8), np.zeros((2, 2), np.uint8)]), "LA").save(
        tmp_path / "la.png"
    )
    Image.fromarray(np.full((2, 2), 102, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_allclose(load(tmp_path / "la.png")[0].numpy(), 0.2, atol=1e-6)
    np.testing.assert_allclose(load(tmp_path / "p.png")[0].numpy(), 0.4, atol=1e-6)


def test_jpeg_gray_is_read(tmp_path):
    path = tmp_path / "flat.jpg"
    Image.fromarray(np.full((8, 8), 51, np.uint8)).save(path, quality=100)
    np.testing.assert_allclose(load(path)[0].numpy(), 0.2, atol=2 / 255)


def test_32bit_gray_outside_16bit_range_rejected(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(ImageLoadError, match=r"wide\.tif.*mode I.*\[0, 65535\]"):
        load(path)


def test_unsupported_mode_names_file_and_mode(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (4, 4)).save(path)
    with pytest.raises(ImageLoadError, match=r"cmyk\.jpg.*'CMYK'"):
        load(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_names_file(tmp_path, damage):
    path = tmp_path / "broken.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    content = path.read_bytes()
    path.write_bytes(b"not an image at all" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*broken\.png"):
        load(path)


def test_missing_file_names_path_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.png.*'cxr'"):
        LoadChestXRayd(keys="cxr")({"cxr": str(tmp_path / "nowhere.png")})


def test_returns_new_dict_and_honours_allow_missing_keys(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    data = {"image": str(path), "Age": 67.0}
    out = LoadChestXRayd(keys=["image", "other"], allow_missing_keys=True)(data)
    assert data["image"] == str(path) and out["Age"] == 67.0 and out["image"].shape == (1, 2, 2)
    with pytest.raises(KeyError):
        LoadChestXRayd(keys=["image", "other"])(data)


def test_dicom_monochrome2_scaled_by_bits_stored_with_pixel_spacing(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", PixelSpacing=[0.5, 0.25])
    image = load(path)
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), RAMP / 4095.0, atol=1e-6)
    np.testing.assert_array_equal(image.meta["spacing"], [0.5, 0.25])
    np.testing.assert_array_equal(image.meta["spacing"], [0.5, 0.25])
    np.testing.assert_allclose(torch.diagonal(image.affine).numpy(), [0.5, 0.25, 1.0, 1.0])


def test_dicom_imager_pixel_spacing_fallback_and_default(tmp_path):
    imager = load(write_dicom(tmp_path / "imager.dcm", ImagerPixelSpacing=[0.139, 0.14]))
    plain = load(write_dicom(tmp_path / "plain.dcm"))
    np.testing.assert_allclose(imager.meta["spacing"], [0.139, 0.14])
    np.testing.assert_array_equal(plain.meta["spacing"], [1.0, 1.0])


def test_dicom_monochrome1_inverted_so_bone_is_bright(tmp_path):
    image = load(write_dicom(tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(image[0].numpy(), 1.0 - RAMP / 4095.0, atol=1e-6)


def test_dicom_rescale_applied_to_pixels_and_range(tmp_path):
    shifted = load(write_dicom(tmp_path / "shift.dcm", RescaleSlope=2, RescaleIntercept=-1024))
    flipped = load(write_dicom(tmp_path / "flip.dcm", RescaleSlope=-1, RescaleIntercept=0))
    np.testing.assert_allclose(shifted[0].numpy(), RAMP / 4095.0, atol=1e-6)
    np.testing.assert_allclose(flipped[0].numpy(), 1.0 - RAMP / 4095.0, atol=1e-6)


def test_dicom_signed_pixels_use_twos_complement_range(tmp_path):
    signed = np.array([[-2048, 0], [2047, -1024]], dtype=np.int16)
    image = load(write_dicom(tmp_path / "signed.dcm", pixels=signed, PixelRepresentation=1))
    np.testing.assert_allclose(image[0].numpy(), (signed + 2048) / 4095.0, atol=1e-6)


def test_dicom_without_bits_stored_is_min_max_scaled(tmp_path):
    image = load(write_dicom(tmp_path / "nobits.dcm", BitsStored=None, HighBit=None))
    np.testing.assert_allclose(image[0].numpy(), RAMP / RAMP.max(), atol=1e-6)


def test_dicom_found_by_preamble_without_suffix(tmp_path):
    path = write_dicom(tmp_path / "IM0001")
    assert is_dicom_file(path)
    np.testing.assert_allclose(load(path)[0].numpy(), RAMP / 4095.0, atol=1e-6)


def test_dicom_without_pixel_data_names_file(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", PixelData=None)
    with pytest.raises(ImageLoadError, match=r"report\.dcm.*no PixelData"):
        load(path)


def test_multiframe_and_colour_dicom_rejected(tmp_path):
    frames = write_dicom(tmp_path / "cine.dcm", pixels=np.stack([RAMP, RAMP]), NumberOfFrames=2)
    colour = write_dicom(tmp_path / "rgb.dcm", PhotometricInterpretation="RGB")
    with pytest.raises(ImageLoadError, match=r"cine\.dcm.*NumberOfFrames = 2"):
        load(frames)
    with pytest.raises(ImageLoadError, match=r"rgb\.dcm.*'RGB'"):
        load(colour)


def test_corrupt_dicom_names_file(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(ImageLoadError, match=r"cannot decode DICOM .*broken\.dcm"):
        read_chest_xray(path)


def _display(image) -> np.ndarray:
    return image[0].numpy()


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_dicom_voi_window_and_presentation_lut_give_the_displayed_film(tmp_path):
    """One displayed film in four encodings scores the same only if each is read as displayed: a plain 12-bit film;
    16-bit pixels offset by 10000 with the window that shows the same film (first of several windows); the
    inverted pixels with Presentation LUT Shape INVERSE; and a VOI LUT Sequence preferred over a misleading window."""
    plain = load(write_dicom(tmp_path / "plain.dcm"))
    offset = RAMP.astype(np.uint16) + 10000
    windowed = load(
        write_dicom(
            tmp_path / "window.dcm", pixels=offset, bits_stored=16, WindowCenter=[12048, 500], WindowWidth=[4096, 100]
        )
    )
    inverse = load(
        write_dicom(tmp_path / "inverse.dcm", pixels=(4095 - RAMP).astype(np.uint16), PresentationLUTShape="INVERSE")
    )
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 10000, 12])
    lut.add_new(0x00283006, "US", list(range(4096)))
    with_lut = load(
        write_dicom(
            tmp_path / "lut.dcm", pixels=offset, bits_stored=16, VOILUTSequence=[lut], WindowCenter=500, WindowWidth=100
        )
    )

    np.testing.assert_allclose(_display(plain), RAMP / 4095.0, atol=1e-6)
    for image in (windowed, inverse, with_lut):
        np.testing.assert_allclose(_display(image), _display(plain), atol=1e-6)


def test_dicom_window_clips_outside_and_monochrome1_inverts_after_the_window(tmp_path):
    narrow = load(write_dicom(tmp_path / "narrow.dcm", WindowCenter=2048, WindowWidth=1024))
    inverted = load(
        write_dicom(
            tmp_path / "m1.dcm",
            WindowCenter=2048,
            WindowWidth=1024,
            PhotometricInterpretation="MONOCHROME1",
            PresentationLUTShape="INVERSE",
        )
    )
    assert _display(narrow)[RAMP <= 1535].max() == 0.0 and _display(narrow)[RAMP > 2560].min() == 1.0
    np.testing.assert_allclose(_display(inverted), 1.0 - _display(narrow), atol=1e-6)  # INVERSE is MONOCHROME1's own


@pytest.mark.parametrize(
    "tags, message",
    [
        ({"RescaleSlope": 0, "RescaleIntercept": 0}, r"RescaleSlope = 0 .* blank"),
        ({"PixelSpacing": ["nan", "nan"]}, r"PixelSpacing = .*positive finite"),
        ({"PixelSpacing": ["inf", "1"]}, r"PixelSpacing = .*positive finite"),
        ({"WindowCenter": 2048, "WindowWidth": 0}, r"window cannot be applied"),
        ({"PresentationLUTShape": "LOG"}, r"PresentationLUTShape = 'LOG'"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_dicom_header_values_that_cannot_be_displayed_name_file_and_tag(tmp_path, tags, message):
    with pytest.raises(ImageLoadError, match=rf"bad\.dcm.*{message}"):
        load(write_dicom(tmp_path / "bad.dcm", **tags))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    """A camera or scanner JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to display)."""
    stored = np.zeros((16, 32), np.uint8)
    stored[:, :16] = 255  # left half bright as stored
    exif = Image.Image().getexif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "sideways.jpg", quality=100, exif=exif)

    image = _display(load(tmp_path / "sideways.jpg"))

    assert image.shape == (32, 16)
    assert image[:14].min() > 0.9 and image[18:].max() < 0.1  # the stored left half is the displayed top


def _png_header(path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (no pixel data needed: the size check reads the header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("width, height", [(20000, 10000), (9000, 9000)])
def test_images_above_the_pixel_limit_are_refused_from_the_header(tmp_path, width, height):
    """20000 x 10000 raised PIL's DecompressionBombError (not an input error: the run died); 9000 x 9000 would be
    decoded to 650 MB of float64."""
    _png_header(tmp_path / "huge.png", width, height)
    with pytest.raises(ImageLoadError, match=rf"huge\.png .*above the limit of {MAX_IMAGE_PIXELS} pixels"):
        load(tmp_path / "huge.png")


def test_dicom_above_the_pixel_limit_is_refused_before_decoding(tmp_path):
    with pytest.raises(ImageLoadError, match=r"big\.dcm is 10000 x 10000 pixels, above the limit"):
        load(write_dicom(tmp_path / "big.dcm", Rows=10000, Columns=10000))
