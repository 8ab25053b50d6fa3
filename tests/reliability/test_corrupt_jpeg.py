"""A truncated or garbled JPEG is a named ``ImageLoadError``, like a corrupt PNG, never a silently partial image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from monai_diff3m.transforms.image import ImageLoadError, read_chest_xray


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_jpeg_names_file(tmp_path, damage):
    path = tmp_path / "broken.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=90)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncated" else content[:3] + b"garbage")
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*broken\.jpg"):
        read_chest_xray(path)
