"""The Model Zoo's ``verify_net_in_out`` and ``ckpt_export`` call ``network_def`` with an image alone: the network
itself answers, with no adapter (the command runs on a fresh copy of the bundle in ``test_relocated_bundle.py``)."""

import torch
from monai.bundle import ConfigParser, verify_net_in_out

from monai_diff3m.checkpoints import read_checkpoint
from monai_diff3m.networks import Diff3MUNet
from monai_diff3m.packaged_bundle import bundle_dir

CONFIGS = bundle_dir() / "configs"


def test_stock_verify_net_in_out_runs_on_the_shipped_network(tmp_path):
    """No trained model under ``bundle_root``: ``network_def`` is the shipped model's architecture."""
    verify_net_in_out(
        "network_def",
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        device="cpu",
        bundle_root=str(tmp_path),
    )


def test_network_def_is_the_network_and_a_checkpoint_loads_into_it_strictly(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(tmp_path)})
    network = parser.get_parsed_content("network_def")
    assert type(network) is Diff3MUNet
    shipped = read_checkpoint(bundle_dir() / "models" / "model.pt")["network"]
    network.load_state_dict(shipped)  # strict, as ckpt_export loads a checkpoint's "network" entry
    image = torch.rand(1, 1, 64, 64) * 2 - 1
    assert network.eval()(image).shape == image.shape
