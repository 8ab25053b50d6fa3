"""The image scores and their registry: values on hand-made twins, scores added from outside the package and chosen
by name, and the lung segmenter as a component the inferer is given."""

import sys
import textwrap

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.inferers import (
    SCORE_NAMES,
    Diff3MAnomalyInferer,
    ScoreInputs,
    compute_image_scores,
    image_scores,
    register_image_score,
    registered_image_scores,
)
from monai_diff3m.inferers.image_scores import lowpass_sigma, shipped_lung_segmenter


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Each test registers into a copy, so no test's scores leak into another's."""
    monkeypatch.setattr(image_scores, "_REGISTRY", dict(image_scores._REGISTRY))


def _inputs(image: torch.Tensor, twin: torch.Tensor, segmenter=None) -> ScoreInputs:
    return ScoreInputs(image, twin, (image - twin).abs(), segmenter or shipped_lung_segmenter())


class _IdentityNetwork(torch.nn.Module):
    """Predicts zero noise, so a DDIM round trip returns the (clipped) image as its own twin."""

    use_pcm = False
    ehr_attention = None

    def forward(self, x, timesteps, ehr=None, ehr_missing=None, x0=None, with_reconstruction=False):
        return torch.zeros_like(x)


def test_package_scores_are_registered_in_report_order():
    assert SCORE_NAMES == ("mse", "mse_normalized", "max", "max_normalized", "p99_smoothed", "lung_mean", "lowpass_mse")
    assert registered_image_scores()[: len(SCORE_NAMES)] == SCORE_NAMES


def test_scores_on_a_hand_made_twin():
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = 1.0
    scores = compute_image_scores(SCORE_NAMES, _inputs(image, torch.zeros(1, 1, 4, 4)))
    assert list(scores) == list(SCORE_NAMES)
    assert scores["mse"].item() == pytest.approx(1 / 16)
    assert scores["max"].item() == pytest.approx(1.0)
    assert scores["max_normalized"].item() == pytest.approx(1.0)
    assert scores["lung_mean"].item() == pytest.approx(1 / 16)  # no lung field in a flat twin: whole-image mean


def test_lowpass_mse_keeps_a_smooth_shift_and_drops_fine_detail():
    """The residual of a near-exact round trip: fine detail (a checkerboard, the larger energy) on the normal film,
    a smooth bump (an opacity the twin removed) on the abnormal one. ``mse`` ranks the normal film higher;
    ``lowpass_mse`` ranks the abnormal one higher, by more than a hundredfold."""
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    detail = 0.2 * ((rows + columns) % 2 * 2 - 1)
    bump = 0.15 * torch.exp(-((rows - 32) ** 2 + (columns - 24) ** 2) / (2 * 6.0**2))
    image = torch.stack([detail, bump])[:, None]
    scores = compute_image_scores(["mse", "lowpass_mse"], _inputs(image, torch.zeros(2, 1, 64, 64)))
    assert scores["mse"][0] > scores["mse"][1]
    assert scores["lowpass_mse"][1] > 100 * scores["lowpass_mse"][0]
    assert lowpass_sigma(64) == 4.0 and lowpass_sigma(256) == 16.0


def test_a_registered_score_is_chosen_by_name_and_only_the_named_scores_are_computed():
    @register_image_score("mean_abs")
    def mean_abs(inputs: ScoreInputs) -> torch.Tensor:
        return inputs.difference.abs().flatten(1).mean(dim=1)

    image = torch.full((2, 1, 8, 8), 0.5)
    image[1] = -0.5
    inferer = Diff3MAnomalyInferer(DDPMScheduler(100), noise_level=10, num_steps=2, scores=["mean_abs", "max"])
    result = inferer(image, _IdentityNetwork())
    assert list(result["scores"]) == ["mean_abs", "max"]
    torch.testing.assert_close(result["scores"]["mean_abs"], torch.zeros(2), rtol=0, atol=1e-5)


def test_a_score_module_registers_its_scores_before_the_names_are_looked_up(tmp_path, monkeypatch):
    (tmp_path / "hospital_scores.py").write_text(
        textwrap.dedent(
            """
            from monai_diff3m.inferers import register_image_score

            @register_image_score("twin_brightness")
            def twin_brightness(inputs):
                return inputs.twin.flatten(1).mean(dim=1)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hospital_scores", raising=False)
    inferer = Diff3MAnomalyInferer(
        DDPMScheduler(100), noise_level=10, num_steps=2, scores=["twin_brightness"], score_modules=["hospital_scores"]
    )
    result = inferer(torch.full((1, 1, 8, 8), 0.25), _IdentityNetwork())
    torch.testing.assert_close(result["scores"]["twin_brightness"], torch.tensor([0.25]), rtol=0, atol=1e-5)


def test_unknown_names_taken_names_and_missing_modules_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown image score 'msee'.*'mse'"):
        Diff3MAnomalyInferer(DDPMScheduler(100), noise_level=10, scores=["msee"])
    with pytest.raises(ValueError, match="already registered"):
        register_image_score("mse", lambda inputs: inputs.difference.flatten(1).mean(dim=1))
    with pytest.raises(ValueError, match="score module 'no_such_scores' cannot be imported"):
        Diff3MAnomalyInferer(DDPMScheduler(100), noise_level=10, score_modules=["no_such_scores"])
    with pytest.raises(ValueError, match="at least one"):
        Diff3MAnomalyInferer(DDPMScheduler(100), noise_level=10, scores=[])


def test_the_lung_segmenter_is_a_component_asked_only_when_a_score_needs_it():
    """The segmenter the inferer is given defines ``lung_mean``'s region; scores that need no lungs never call it."""
    calls = []

    def two_lungs(films: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(films.shape))
        masks = torch.zeros_like(films, dtype=torch.bool)
        masks[..., 8:24, 4:14] = True  # a plausible left lung field
        masks[..., 8:24, 18:28] = True  # and a right one
        return masks

    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:24, 4:14] = 0.8  # bright in the left lung only: half the lung area at 0.8
    scores = compute_image_scores(["lung_mean"], _inputs(image, torch.zeros_like(image), two_lungs))
    assert scores["lung_mean"].item() == pytest.approx(0.4)

    calls.clear()
    for names, expected_calls in ((["mse"], 0), (["lung_mean"], 1)):
        inferer = Diff3MAnomalyInferer(
            DDPMScheduler(100), noise_level=10, num_steps=2, scores=names, lung_segmenter=two_lungs
        )
        inferer(image, _IdentityNetwork())
        assert len(calls) == expected_calls
