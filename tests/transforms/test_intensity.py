"""The same real film as an 8-bit PNG, a 16-bit PNG holding 12-bit values and a 12-bit DICOM."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_diff3m.transforms import LoadChestXRayd, NormaliseChestXRayd

from dicom_files import write_dicom

FILM = Path(__file__).resolve().parents[1] / "data" / "nih64" / "images" / "00000097_000.png"


def _three_encodings(tmp_path: Path) -> list[Path]:
    """One film written three ways with the same pixel values: 8 bits (0..255) and 12 bits (0..4080)."""
    values = np.asarray(Image.open(FILM), dtype=np.uint16)
    Image.fromarray(values * 16).save(tmp_path / "film16.png")
    return [FILM, tmp_path / "film16.png", write_dicom(tmp_path / "film.dcm", values * 16, bits_stored=12)]


def _normalised(path: Path, mode: str) -> torch.Tensor:
    loaded = LoadChestXRayd("image")({"image": str(path)})
    return torch.as_tensor(NormaliseChestXRayd("image", mode=mode)(loaded)["image"])


@pytest.mark.parametrize("mode", ["percentile", "histogram"])
def test_normalised_modes_give_the_same_input_whatever_the_encoding(tmp_path, mode):
    images = [_normalised(path, mode) for path in _three_encodings(tmp_path)]
    assert images[0].min() == -1.0 and images[0].max() == 1.0
    for other in images[1:]:
        assert torch.allclose(images[0], other, atol=1e-4)


def test_fixed_mode_keeps_the_loaded_scale_so_a_16bit_png_of_12bit_values_is_nearly_black(tmp_path):
    png8, png16, dicom = (_normalised(path, "fixed") for path in _three_encodings(tmp_path))
    assert torch.allclose(png8, dicom, atol=0.01)
    assert png16.max() < -0.85 < png8.max()


def test_percentile_mode_maps_the_chosen_percentiles_to_the_range_ends():
    image = torch.linspace(0.0, 1.0, 101).reshape(1, 1, 101)
    out = NormaliseChestXRayd("image", mode="percentile", lower=10, upper=90)({"image": image})["image"]
    assert out[0, 0, 10].item() == pytest.approx(-1.0) and out[0, 0, 90].item() == pytest.approx(1.0)
    assert out.min() == -1.0 and out.max() == 1.0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="intensity mode must be one of"):
        NormaliseChestXRayd("image", mode="clahe")
    with pytest.raises(ValueError, match="percentiles"):
        NormaliseChestXRayd("image", lower=99, upper=1)


def test_output_range_gives_the_authors_zero_to_one_images():
    """The authors feed ToTensor's [0, 1] unchanged: ``mode="fixed"`` with ``output_range=(0, 1)`` is the identity."""
    image = torch.linspace(0.0, 1.0, 11).reshape(1, 1, 11)
    same = NormaliseChestXRayd("image", mode="fixed", output_range=(0.0, 1.0))({"image": image})["image"]
    torch.testing.assert_close(torch.as_tensor(same), image)
    stretched = NormaliseChestXRayd("image", mode="percentile", lower=10, upper=90, output_range=(0.0, 1.0))(
        {"image": image}
    )["image"]
    assert float(stretched.min()) == 0.0 and float(stretched.max()) == 1.0
    with pytest.raises(ValueError, match="output_range"):
        NormaliseChestXRayd("image", output_range=(1.0, 0.0))
