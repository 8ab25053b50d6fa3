"""Ground-truth lesion masks for pixel-level evaluation (phantoms ship them; real datasets usually don't)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from monai_diff3m.transforms.image import read_chest_xray


class LoadLesionMaskd(MapTransform):
    """Load the binary lesion mask path under each key, or an all-zero mask when the path is empty (normal case).

    Normals have no mask file, yet batches need one tensor per image, so the empty mask is made in the shape of
    ``reference_key``'s image, which must be loaded already; resize the masks to the image size with ``mode="nearest"``.

    Args:
        keys: keys holding mask paths (or None).
        reference_key: key of the already-loaded image whose shape an empty mask takes.
    """

    def __init__(self, keys: Hashable | list[Hashable], reference_key: Hashable = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.reference_key = reference_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            path = d.get(key)
            if path:
                d[key] = (read_chest_xray(path) > 0.5).float()
            else:
                d[key] = torch.zeros_like(torch.as_tensor(d[self.reference_key]))
        return d
