import subprocess
import sys

import torch

from monai_diff3m.networks import Diff3MNoisePredictor, Diff3MUNet
from bundle.tiny_bundle import REPO_ROOT


def test_monai_verify_net_in_out_accepts_the_bundle_network():
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_io",
         "--config_file", "bundles/diff3m/configs/train.json", "--meta_file", "bundles/diff3m/configs/metadata.json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_noise_predictor_defaults_mean_missing_ehr_at_timestep_zero():
    network = Diff3MUNet(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, ehr_group_sizes=(5,), ieca_mode="spatial")
    x = torch.randn(2, 1, 16, 16)
    expected = network(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, 5), torch.ones(2, 5), x0=x).noise
    torch.testing.assert_close(Diff3MNoisePredictor(network)(x), expected)
