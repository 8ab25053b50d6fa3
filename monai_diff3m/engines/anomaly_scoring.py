"""``iteration_update`` that scores a batch with the anomaly inferer inside a MONAI ``SupervisedEvaluator``.

Kept instead of the evaluator's own ``prepare_batch`` + ``inferer`` iteration: that iteration leaves
``{"image", "label", "pred"}`` in ``engine.state.output``, so every result writer and image grid would need an
``output_transform`` to find the identifiers, affines and masks they read, and MONAI's ``PrepareBatchExtraInput``
keeps the image a ``MetaTensor`` (scoring ran several times slower with it, see ``prepare_diff3m_batch``).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor

from monai_diff3m.engines.diffusion_steps import prepare_diff3m_batch
from monai_diff3m.inferers.anomaly import Diff3MAnomalyInferer


class AnomalyScoringStep:
    """Run ``Diff3MAnomalyInferer`` on a batch and return everything the result writers need.

    The output keeps the batch's identifiers (``source``), its per-image affine (for NIfTI spacing), the encoded
    ``ehr`` and its ``ehr_missing`` mask (to report attention only for what a film had), and the ground-truth
    ``mask`` when the batch has one, next to the twin, the maps, the scores and the EHR attention.
    """

    def __init__(self, inferer: Diff3MAnomalyInferer, image_key: str = "image", ehr_key: str = "ehr") -> None:
        self.inferer = inferer
        self.image_key = image_key
        self.ehr_key = ehr_key

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        engine.network.eval()
        image, ehr, missing = prepare_diff3m_batch(
            batchdata, engine.state.device, engine.non_blocking, self.image_key, self.ehr_key
        )
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bool(engine.amp)):
            result = self.inferer(image, engine.network, ehr, missing)
        batch_image = batchdata[self.image_key]
        output = {
            "image": image,
            "ehr": ehr,
            "ehr_missing": missing,
            **result,
            "source": list(batchdata.get("source", [""] * image.shape[0])),
            "affine": batch_image.affine if isinstance(batch_image, MetaTensor) else None,
        }
        if "mask" in batchdata:
            output["mask"] = torch.as_tensor(batchdata["mask"])
        return output
