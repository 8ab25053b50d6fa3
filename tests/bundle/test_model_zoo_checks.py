"""The MONAI Model Zoo's bundle checks (its ``ci/verify_bundle.py``), offline: files, workflow properties, export.

The shape check (``verify_net_in_out network_def`` run from the bundle folder) runs in ``test_relocated_bundle.py``,
on a copy of the bundle that has no checkpoint yet.
"""

import json
import re

import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata

import monai_diff3m
from monai_diff3m.checkpoints import network_from_checkpoint
from monai_diff3m.packaged_bundle import bundle_dir

from tiny_bundle import BUNDLE, CONFIGS, EVALUATE, REPO_ROOT, config_files, scoring_overrides, tiny_overrides


def test_bundle_has_the_files_the_zoo_requires_and_ships_them_in_the_package():
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert (BUNDLE / "LICENSE").read_text() == licence
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    data_licence = (BUNDLE / "docs" / "data_license.txt").read_text()
    assert all(name in data_licence for name in ("CheXpert", "MIMIC-CXR", "MIMIC-IV", "ChestX-ray14", "PhysioNet"))
    packaged = bundle_dir()
    for name in ("LICENSE", "docs/README.md", "docs/data_license.txt", "configs/metadata.json", "configs/logging.conf"):
        assert (packaged / name).read_bytes() == (BUNDLE / name).read_bytes(), name


def test_no_config_names_a_repository_path_or_another_file():
    for config in CONFIGS.glob("*.json"):
        text = config.read_text()
        assert "bundles/" not in text and not re.search(r'"%[^"]*\.(json|yaml)#', text), config.name


@pytest.mark.parametrize(
    ("configs", "workflow_type"),
    [(["train.json"], "train"), (["inference.json"], "inference"), (EVALUATE, "inference")],
)
def test_workflow_has_every_property_monai_requires(trained_bundle, configs, workflow_type):
    overrides = tiny_overrides(trained_bundle) if workflow_type == "train" else scoring_overrides(trained_bundle)
    workflow = ConfigWorkflow(config_file=config_files(*configs), workflow_type=workflow_type, **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_ckpt_export_traces_the_trained_network_with_its_checkpoint_weights(trained_bundle, tmp_path):
    checkpoint = trained_bundle / "models" / "diff3m_pooled_best.pt"
    exported = tmp_path / "diff3m_pooled.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(checkpoint),
        key_in_ckpt="network",
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        use_trace=True,
        input_shape=[1, 1, 32, 32],
        **scoring_overrides(trained_bundle),
    )
    image = torch.rand(2, 1, 32, 32) * 2 - 1
    expected = network_from_checkpoint(checkpoint).eval()(image)  # the network itself: ε̂ at t = 0, no EHR known
    torch.testing.assert_close(torch.jit.load(str(exported))(image), expected)


SCHEMA = BUNDLE / "docs" / "metadata_schema.json"


@pytest.mark.filterwarnings("ignore:No hash value provided")  # the schema is ours, in the repository
def test_metadata_verifies_offline_against_the_schema_the_project_keeps(tmp_path):
    """MONAI's ``verify_metadata`` downloads the schema only when ``filepath`` is absent: ours is always present."""
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    broken["eval_metrics"] = {"image_auroc": "see docs/README.md"}  # what 0.2.0 shipped
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'see docs/README.md' is not of type 'number'"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_package_and_bundle_have_one_version():
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["version"] == monai_diff3m.__version__ == metadata["required_packages_version"]["monai-diff3m"]
    assert all(isinstance(value, float) for value in metadata["eval_metrics"].values())
