"""Anomaly inference (METHOD.md §4): noise an image to level L, denoise it under its own EHR, compare.

The denoised image is a normal-looking twin: the model only learnt normal anatomy for this EHR, so what it cannot
reproduce is anomalous. ``noising="ddim_inversion"`` is the reference (deterministic DDIM inversion to L);
``noising="stochastic"`` jumps to L with q(x_t | x₀) using per-image seeded noise (AnoDDPM-style), which halves the
network evaluations and erases small lesions more reliably. Both denoise with deterministic DDIM (η = 0).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.layers import GaussianFilter
from monai.networks.schedulers import Scheduler

from monai_diff3m.networks.diff3m_unet import Diff3MOutput
from monai_diff3m.networks.lung_fields import LungFieldSegmenter
from monai_diff3m.transforms.lung_fields import plausible_lung_fields

NOISING_MODES = ("ddim_inversion", "stochastic")
#: Image scores of METHOD.md §4, in report order: reference scores first, then ours.
SCORE_NAMES = ("mse", "mse_normalized", "max", "max_normalized", "p99_smoothed", "lung_mean")


#: How a schedule with every timestep between 0 and L is named (``num_steps=None``).
FULL_SCHEDULE = "full"


@dataclass(frozen=True)
class ScoringSchedule:
    """How an image is noised and denoised; ``num_steps=None`` takes every timestep between 0 and L."""

    noising: str
    noise_level: int
    num_steps: int | None

    @property
    def steps(self) -> int:
        """DDIM steps between 0 and L: ``num_steps``, or L for the full schedule."""
        return self.noise_level if self.num_steps is None else self.num_steps

    @property
    def evaluations(self) -> int:
        """Network evaluations per image: the denoising steps, twice for DDIM inversion (up, then down)."""
        return self.steps * (2 if self.noising == "ddim_inversion" else 1)

    @property
    def name(self) -> str:
        return (
            f"{self.noising} L={self.noise_level} steps={FULL_SCHEDULE if self.num_steps is None else self.num_steps}"
        )


#: The authors' scoring: DDIM inversion with every timestep to L = 400 and back (800 evaluations per image).
REFERENCE_SCHEDULE = ScoringSchedule("ddim_inversion", 400, None)


def ddim_timesteps(noise_level: int, num_steps: int | None) -> list[int]:
    """Ascending timesteps 0 = t_0 < t_1 < … < t_K = L; ``num_steps=None`` uses every timestep (reference)."""
    if noise_level < 1:
        raise ValueError(f"noise_level must be >= 1, got {noise_level}")
    steps = noise_level if num_steps is None else num_steps
    if not 1 <= steps <= noise_level:
        raise ValueError(f"num_steps must be within [1, noise_level={noise_level}], got {num_steps}")
    return torch.linspace(0, noise_level, steps + 1).round().long().tolist()


def image_noise(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal noise shaped like ``images`` (N, C, H, W), each image's drawn from a generator seeded by
    ``seed`` and a hash of that image's own float32 pixels.

    A score must be a function of the image, not of what else is in its batch: one generator per batch gave copies
    of one film at four batch positions four different scores. Hashing the pixels (not the path or the position)
    gives identical films identical noise wherever they are: alone, in any batch, on any device. The EHR is left out
    of the hash, so scoring one film under two EHRs changes only the conditioning, not the noise.
    """
    pixels = images.detach().float().cpu().contiguous().numpy()
    noise = []
    for image in pixels:
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=str(seed).encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        noise.append(torch.randn(image.shape, generator=generator))
    return torch.stack(noise).to(images.device)


def _minmax(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


@functools.lru_cache(maxsize=1)
def _lung_field_segmenter() -> LungFieldSegmenter:
    return LungFieldSegmenter()


def lung_masks(twin: torch.Tensor) -> torch.Tensor:
    """Lung fields of each normal twin (N, 1, H, W), by the shipped lung-field network; the twin, not the input, so
    a lesion that fills a lung cannot hide it. A twin whose mask is not two plausible lungs (``plausible_lung_fields``,
    e.g. a blank or non-chest image) gets an all-True mask: its ``lung_mean`` is the whole-image mean."""
    masks = _lung_field_segmenter()(twin.float())
    implausible = torch.tensor(
        [not plausible_lung_fields(mask[0].cpu().numpy()) for mask in masks], device=masks.device
    )
    return masks | implausible.view(-1, 1, 1, 1)


def image_scores(image: torch.Tensor, twin: torch.Tensor, smoothed_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every image score of ``SCORE_NAMES`` for a batch, each of shape (N,)."""
    lungs = lung_masks(twin).to(smoothed_map.dtype)
    difference = image - twin
    normalized_difference = _minmax(image) - _minmax(twin)
    flat_smoothed = smoothed_map.flatten(1)
    return {
        "mse": difference.pow(2).flatten(1).mean(dim=1),
        "mse_normalized": normalized_difference.pow(2).flatten(1).mean(dim=1),
        "max": difference.abs().flatten(1).amax(dim=1),
        "max_normalized": normalized_difference.abs().flatten(1).amax(dim=1),
        "p99_smoothed": torch.quantile(flat_smoothed, 0.99, dim=1),
        "lung_mean": (smoothed_map * lungs).flatten(1).sum(dim=1) / lungs.flatten(1).sum(dim=1),
    }


class Diff3MAnomalyInferer(Inferer):
    """Normal twin, pixel anomaly map and image scores for a batch of images in [−1, 1].

    Args:
        scheduler: the training noise schedule (its ``alphas_cumprod``); a MONAI DDPM/DDIM scheduler.
        noise_level: L, the timestep the image is noised to (reference 400 of T = 1000).
        num_steps: DDIM steps from 0 to L (each way); ``None`` for every timestep as in the reference.
        noising: ``"ddim_inversion"`` (reference) or ``"stochastic"``.
        smoothing_sigma: Gaussian sigma in pixels for the smoothed map (0 disables smoothing).
        seed: seed of the stochastic noise, combined with each image's pixels (:func:`image_noise`), so that a score
            is reproducible and does not depend on the batch.
        use_pcm: replace x_t by the checkerboard reconstruction x̃_t when predicting x̂₀, if the network has PCM.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        noise_level: int = 50,
        num_steps: int | None = 5,
        noising: str = "stochastic",
        smoothing_sigma: float = 1.0,
        seed: int = 0,
        use_pcm: bool = False,
    ) -> None:
        super().__init__()
        if noising not in NOISING_MODES:
            raise ValueError(f"noising must be one of {NOISING_MODES}, got {noising!r}")
        if noise_level >= scheduler.num_train_timesteps:
            raise ValueError(
                f"noise_level {noise_level} must be below the scheduler's T={scheduler.num_train_timesteps}"
            )
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.timesteps = ddim_timesteps(noise_level, num_steps)
        self.noising = noising
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        self.use_pcm = use_pcm

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Return ``twin``, ``anomaly_map``, ``smoothed_map`` (N, 1, H, W), ``scores`` (name -> (N,)) and
        ``ehr_attention`` (N, S) averaged over denoising steps (None without EHR)."""
        image = inputs.float()
        alphas = self.alphas_cumprod.to(image.device)
        with torch.no_grad():
            if self.noising == "ddim_inversion":
                noisy = self._invert(image, network, ehr, ehr_missing, alphas)
            else:
                noise = image_noise(image, self.seed)
                level = alphas[self.timesteps[-1]]
                noisy = level.sqrt() * image + (1 - level).sqrt() * noise
            twin, attention = self._denoise(noisy, image, network, ehr, ehr_missing, alphas)
        anomaly_map = (image - twin).abs()
        smoothed = anomaly_map
        if self.smoothing_sigma > 0:
            smoothed = GaussianFilter(spatial_dims=2, sigma=self.smoothing_sigma).to(image.device)(anomaly_map)
        return {
            "twin": twin,
            "anomaly_map": anomaly_map,
            "smoothed_map": smoothed,
            "scores": image_scores(image, twin, smoothed),
            "ehr_attention": attention,
        }

    def _predict(self, network, x, t, image, ehr, ehr_missing) -> Diff3MOutput:
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        output = network(x, timesteps, ehr, ehr_missing, x0=image)
        return Diff3MOutput(
            output.noise.float(),
            None if output.reconstruction is None else output.reconstruction.float(),
            output.ehr_attention,
        )

    def _invert(self, image, network, ehr, ehr_missing, alphas) -> torch.Tensor:
        """Deterministic DDIM inversion x₀ → x_L: at t_k predict ε, then move x̂₀ and ε to t_{k+1}."""
        x = image
        for current, following in zip(self.timesteps[:-1], self.timesteps[1:]):
            noise = self._predict(network, x, current, image, ehr, ehr_missing).noise
            x0_estimate = (x - (1 - alphas[current]).sqrt() * noise) / alphas[current].sqrt()
            x = alphas[following].sqrt() * x0_estimate + (1 - alphas[following]).sqrt() * noise
        return x

    def _denoise(self, x, image, network, ehr, ehr_missing, alphas) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic DDIM x_L → x₀. With PCM, x̂₀ is predicted from x̃_t and ε re-derived from the real x_t."""
        attention_sum = None
        steps = list(zip(reversed(self.timesteps[1:]), reversed(self.timesteps[:-1])))
        for current, previous in steps:
            output = self._predict(network, x, current, image, ehr, ehr_missing)
            alpha, alpha_previous = alphas[current], alphas[previous]
            source = output.reconstruction if (self.use_pcm and output.reconstruction is not None) else x
            x0_estimate = ((source - (1 - alpha).sqrt() * output.noise) / alpha.sqrt()).clamp(-1.0, 1.0)
            noise = (x - alpha.sqrt() * x0_estimate) / (1 - alpha).sqrt()
            x = alpha_previous.sqrt() * x0_estimate + (1 - alpha_previous).sqrt() * noise
            if output.ehr_attention is not None:
                attention_sum = output.ehr_attention if attention_sum is None else attention_sum + output.ehr_attention
        attention = None if attention_sum is None else attention_sum / len(steps)
        return x.clamp(-1.0, 1.0), attention
