import json

import pytest
import torch

from monai_diff3m.checkpoints import checkpoint_metadata, network_from_checkpoint
from monai_diff3m.export_model import CARD_FIELDS, export_model

CARD = {
    "training_command": "python -m monai.bundle run training ...",
    "training_data": "tiny phantoms",
    "data_licence": "generated",
    "test_metrics": {"lowpass_mse": {"auroc": 0.5}},
}


def test_export_writes_weights_statistics_and_card(trained_bundle, tmp_path):
    source = trained_bundle / "models" / "diff3m_pooled_best.pt"
    output = export_model(source, CARD, tmp_path / "models" / "model.pt")

    metadata = checkpoint_metadata(output)
    assert metadata["model_card"] == CARD
    assert metadata["ehr_statistics_file"] == "model_ehr_statistics.json"
    assert (tmp_path / "models" / "model_ehr_statistics.json").read_text() == (
        trained_bundle / "models" / checkpoint_metadata(source)["ehr_statistics_file"]
    ).read_text()
    assert json.loads((tmp_path / "models" / "model_card.json").read_text()) == CARD
    exported, trained = network_from_checkpoint(output), network_from_checkpoint(source)
    for (name, value), (_, expected) in zip(exported.state_dict().items(), trained.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    assert set(torch.load(output, weights_only=True)) == {"network", "metadata"}  # no optimizer state shipped


def test_a_model_without_its_card_does_not_ship(trained_bundle, tmp_path):
    card = {name: CARD[name] for name in CARD_FIELDS if name != "test_metrics"}
    with pytest.raises(ValueError, match=r"model card lacks \['test_metrics'\]"):
        export_model(trained_bundle / "models" / "diff3m_pooled_best.pt", card, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
