"""The single-tensor view that the Model Zoo's ``verify_net_in_out`` and ``ckpt_export`` run (``network_def``).

The command itself runs on a fresh copy of the bundle in ``tests/bundle/test_relocated_bundle.py``.
"""

import torch

from monai_diff3m.networks import Diff3MNoisePredictor, Diff3MUNet

SMALL = {"channels": (8, 16), "attention_levels": (False, True), "num_head_channels": 8, "norm_num_groups": 8}


def test_noise_predictor_defaults_mean_missing_ehr_at_timestep_zero():
    network = Diff3MUNet(**SMALL, ehr_group_sizes=(5,), ieca_mode="spatial")
    x = torch.randn(2, 1, 16, 16)
    expected = network(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, 5), torch.ones(2, 5), x0=x).noise
    torch.testing.assert_close(Diff3MNoisePredictor(network)(x), expected)


def test_noise_predictor_weights_carry_the_network_names_so_checkpoint_weights_load_into_it():
    trained = Diff3MUNet(**SMALL, ieca_mode="pooled")
    view = Diff3MNoisePredictor(Diff3MUNet(**SMALL, ieca_mode="pooled"))
    assert list(view.state_dict()) == list(trained.state_dict())
    view.load_state_dict(trained.state_dict())  # strict, as ckpt_export loads a checkpoint's "network" entry
    assert all(torch.equal(view.network.state_dict()[key], value) for key, value in trained.state_dict().items())
