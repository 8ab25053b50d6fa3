"""Anomaly inference (docs/method.md §4): noise an image to level L, denoise it under its own EHR, compare.

The denoised image is a normal-looking twin: the model only learnt normal anatomy for this EHR, so what it cannot
reproduce is anomalous. ``noising="ddim_inversion"`` is the authors' (deterministic DDIM inversion to L);
``noising="stochastic"`` jumps to L with q(x_t | x₀) using per-image seeded noise (AnoDDPM-style), which halves the
network evaluations and erases small lesions more reliably. Both denoise with deterministic DDIM (η = 0). Every
step, in both directions, predicts x̂₀ the same way: from x̃_t instead of x_t when the network has PCM branches,
clipped to ``clip_range``; the update re-derives ε from the real x_t (the authors' code does the same both ways).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.networks.layers import GaussianFilter
from monai.networks.schedulers import Scheduler

from monai_diff3m.networks.diff3m_unet import split_prediction
from monai_diff3m.networks.lung_fields import LungFieldSegmenter
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE
from monai_diff3m.transforms.lung_fields import plausible_lung_fields

NOISING_MODES = ("ddim_inversion", "stochastic")
#: How DDIM steps are indexed, see ``ddim_steps``.
DDIM_INDEXINGS = ("aligned", "authors")
#: Image scores of docs/method.md §4, in report order: the authors' four first, then ours.
SCORE_NAMES = ("mse", "mse_normalized", "max", "max_normalized", "p99_smoothed", "lung_mean", "lowpass_mse")
#: The score ``scores.csv`` stands behind (``anomaly_score``): the one that holds on every real set (bundle docs).
DEFAULT_SCORE = "lowpass_mse"
#: Gaussian sigma of ``lowpass_mse`` in pixels per 64 pixels of image side (4 pixels at 64x64, 16 at 256x256), so
#: that the band it keeps is the same fraction of the chest at every image size.
LOWPASS_SIGMA_PER_64_PIXELS = 4.0


#: How a schedule with every timestep between 0 and L is named (``num_steps=None``).
FULL_SCHEDULE = "full"
#: The timestep of the clean image in ``ddim_steps``: ᾱ = 1 there.
CLEAN = -1


@dataclass(frozen=True)
class ScoringSchedule:
    """How an image is noised and denoised; ``num_steps=None`` takes every timestep between 0 and L."""

    noising: str
    noise_level: int
    num_steps: int | None
    indexing: str = "aligned"

    @property
    def steps(self) -> int:
        """DDIM steps between 0 and L: ``num_steps``, or L for the full schedule."""
        return self.noise_level if self.num_steps is None else self.num_steps

    @property
    def evaluations(self) -> int:
        """Network evaluations per image: the denoising steps, and as many inversion steps for DDIM inversion."""
        inversion, denoising = ddim_steps(self.noise_level, self.num_steps, self.indexing)
        return len(denoising) + (len(inversion) if self.noising == "ddim_inversion" else 0)

    @property
    def name(self) -> str:
        steps = FULL_SCHEDULE if self.num_steps is None else self.num_steps
        indexing = "" if self.indexing == "aligned" else f" indexing={self.indexing}"
        return f"{self.noising} L={self.noise_level} steps={steps}{indexing}"


#: The authors' scoring: DDIM inversion with every timestep to L = 400 and back, indexed as their code (798 network
#: evaluations per image). Their images are in [0, 1]: on this project's default [−1, 1] range the image has twice
#: the amplitude, so L = 400 there is 4 times their signal-to-noise ratio; their noise corresponds to about t = 530.
REFERENCE_SCHEDULE = ScoringSchedule("ddim_inversion", 400, None, "authors")


def ddim_timesteps(noise_level: int, num_steps: int | None) -> list[int]:
    """Ascending timesteps 0 = t_0 < t_1 < … < t_K = L; ``num_steps=None`` uses every timestep."""
    if noise_level < 1:
        raise ValueError(f"noise_level must be >= 1, got {noise_level}")
    steps = noise_level if num_steps is None else num_steps
    if not 1 <= steps <= noise_level:
        raise ValueError(f"num_steps must be within [1, noise_level={noise_level}], got {num_steps}")
    return torch.linspace(0, noise_level, steps + 1).round().long().tolist()


def ddim_steps(
    noise_level: int, num_steps: int | None, indexing: str = "aligned"
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(inversion, denoising) DDIM steps as (timestep the network is evaluated at, timestep the update moves to).

    ``aligned``: the clean image stands at t = 0; inversion moves t_k → t_(k+1) up to L and denoising comes back
    L → 0 over the same timesteps (``ddim_timesteps``).

    ``authors`` (every timestep only): their code inverts k → k + 1 for k = 1 … L − 1 (the first step evaluates the
    network at t = 1 on an image at t = 0, and the last one lands on L), then denoises i → i − 1 for i = L − 2 … 0,
    the last step onto the clean image (ᾱ = 1, ``CLEAN``): denoising starts two timesteps below where the inversion
    ended, a bug the preset reproduces; 2(L − 1) evaluations.
    """
    if indexing not in DDIM_INDEXINGS:
        raise ValueError(f"indexing must be one of {DDIM_INDEXINGS}, got {indexing!r}")
    if indexing == "aligned":
        timesteps = ddim_timesteps(noise_level, num_steps)
        inversion = list(zip(timesteps[:-1], timesteps[1:]))
        return inversion, [(following, current) for current, following in reversed(inversion)]
    if num_steps is not None or noise_level < 2:
        raise ValueError(
            "the authors' indexing exists for every timestep (num_steps=None) and L >= 2, "
            f"got L={noise_level}, num_steps={num_steps}"
        )
    return [(k, k + 1) for k in range(1, noise_level)], [(i, i - 1) for i in range(noise_level - 2, -1, -1)]


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


def predict_x0(
    noisy: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, clip_range: Sequence[float]
) -> torch.Tensor:
    """x̂₀ = clip((x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, ``clip_range``): the one x̂₀ of the package (every DDIM step, the
    validation grids). ``noisy`` is x_t, or the PCM reconstruction x̃_t; ``alpha_bar`` broadcasts against it."""
    return ((noisy - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()).clamp(*clip_range)


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


def lowpass_sigma(image_size: int) -> float:
    """``lowpass_mse``'s Gaussian sigma in pixels for square images of side ``image_size``."""
    return LOWPASS_SIGMA_PER_64_PIXELS * image_size / 64


def image_scores(image: torch.Tensor, twin: torch.Tensor, smoothed_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every image score of ``SCORE_NAMES`` for a batch, each of shape (N,).

    ``lowpass_mse`` is the energy of the *signed* difference after a Gaussian of :func:`lowpass_sigma`. A
    deterministic DDIM round trip reproduces a film almost exactly; what it does not reproduce splits into fine
    detail (ribs, edges, grain), which is most of the residual's energy and can be larger on crisp normal films than
    on abnormal ones, and a smooth shift towards normal anatomy where the film is not normal. Squaring before
    smoothing (``mse``, ``p99_smoothed``) keeps the first, which is how those scores read below chance on real films;
    smoothing before squaring keeps the second (measured in the bundle docs, "Real films").
    """
    lungs = lung_masks(twin).to(smoothed_map.dtype)
    difference = image - twin
    lowpass = GaussianFilter(spatial_dims=2, sigma=lowpass_sigma(image.shape[-1])).to(image.device)
    normalized_difference = _minmax(image) - _minmax(twin)
    flat_smoothed = smoothed_map.flatten(1)
    return {
        "mse": difference.pow(2).flatten(1).mean(dim=1),
        "mse_normalized": normalized_difference.pow(2).flatten(1).mean(dim=1),
        "max": difference.abs().flatten(1).amax(dim=1),
        "max_normalized": normalized_difference.abs().flatten(1).amax(dim=1),
        "p99_smoothed": torch.quantile(flat_smoothed, 0.99, dim=1),
        "lung_mean": (smoothed_map * lungs).flatten(1).sum(dim=1) / lungs.flatten(1).sum(dim=1),
        "lowpass_mse": lowpass(difference).pow(2).flatten(1).mean(dim=1),
    }


class Diff3MAnomalyInferer(Inferer):
    """Normal twin, pixel anomaly map and image scores for a batch of images in ``image_range``.

    Under a MONAI ``SupervisedEvaluator`` with ``PrepareBatchExtraInput({"ehr": "ehr", "ehr_missing":
    "ehr_missing"})``, its result is the evaluator's ``pred``.

    Args:
        scheduler: the training noise schedule (its ``alphas_cumprod``); a MONAI DDPM/DDIM scheduler.
        noise_level: L, the timestep the image is noised to (the authors: 400 of T = 1000, on [0, 1] images).
        num_steps: DDIM steps from 0 to L (each way); ``None`` for every timestep, as the authors.
        noising: ``"ddim_inversion"`` (the authors') or ``"stochastic"``.
        smoothing_sigma: Gaussian sigma in pixels for the smoothed map (0 disables smoothing).
        seed: seed of the stochastic noise, combined with each image's pixels (:func:`image_noise`), so that a score
            is reproducible and does not depend on the batch.
        use_pcm: replace x_t by the checkerboard reconstruction x̃_t when predicting x̂₀, if the network has PCM.
        image_range: intensity range of the images the network was trained on (``[-1, 1]`` or the authors' ``[0, 1]``).
        clip_range: x̂₀ is clipped to this range at every step, and the twin too; default ``image_range``. The authors
            clip to [−1, 1] although their images are in [0, 1] (a bug: their twin can go below 0, where no image
            is); the reference preset reproduces it.
        indexing: ``"aligned"`` or the authors' (``ddim_steps``); ``"authors"`` needs DDIM inversion with every
            timestep and, as their code, first adds q(x_0 | image) noise (standard deviation √(1 − ᾱ₀) = 0.01),
            drawn here like the stochastic noise (:func:`image_noise`).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        noise_level: int = 200,
        num_steps: int | None = 10,
        noising: str = "ddim_inversion",
        smoothing_sigma: float = 1.0,
        seed: int = 0,
        use_pcm: bool = False,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        clip_range: Sequence[float] | None = None,
        indexing: str = "aligned",
    ) -> None:
        super().__init__()
        if noising not in NOISING_MODES:
            raise ValueError(f"noising must be one of {NOISING_MODES}, got {noising!r}")
        if noise_level >= scheduler.num_train_timesteps:
            raise ValueError(
                f"noise_level {noise_level} must be below the scheduler's T={scheduler.num_train_timesteps}"
            )
        if indexing == "authors" and noising != "ddim_inversion":
            raise ValueError("the authors' indexing belongs to their DDIM inversion; use noising='ddim_inversion'")
        self.scheduler = scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.inversion_steps, self.denoising_steps = ddim_steps(noise_level, num_steps, indexing)
        self.noising = noising
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed
        self.use_pcm = use_pcm
        low, high = (float(bound) for bound in image_range)
        self.image_range = (low, high)
        clip_low, clip_high = (low, high) if clip_range is None else (float(bound) for bound in clip_range)
        self.clip_range = (clip_low, clip_high)
        self.indexing = indexing

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Return ``twin``, ``anomaly_map``, ``smoothed_map`` (N, 1, H, W), ``scores`` (name -> (N,)) and
        ``ehr_attention`` (N, S) averaged over denoising steps (None without EHR)."""
        # a MetaTensor's __torch_function__ detour on every operation made the loop several times slower
        image = (inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs).float()
        alphas = self.alphas_cumprod.to(image.device)
        with torch.no_grad():
            if self.noising == "ddim_inversion":
                start = self._jump(image, 0) if self.indexing == "authors" else image
                noisy, _ = self._ddim(start, self.inversion_steps, image, network, ehr, ehr_missing, alphas)
            else:
                noisy = self._jump(image, self.denoising_steps[0][0])
            twin, attention = self._ddim(noisy, self.denoising_steps, image, network, ehr, ehr_missing, alphas)
        # maps and scores in float32 even when the caller scores under bf16 autocast (quantiles need floats)
        with torch.autocast(image.device.type, enabled=False):
            twin = twin.float().clamp(*self.clip_range)
            anomaly_map = (image - twin).abs()
            smoothed = anomaly_map
            if self.smoothing_sigma > 0:
                smoothed = GaussianFilter(spatial_dims=2, sigma=self.smoothing_sigma).to(image.device)(anomaly_map)
            scores = image_scores(image, twin, smoothed)
        return {
            "twin": twin,
            "anomaly_map": anomaly_map,
            "smoothed_map": smoothed,
            "scores": scores,
            "ehr_attention": attention,
        }

    def _predict(
        self, network, x, t, image, ehr, ehr_missing
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(ε̂, x̃_t or None, EHR attention or None) at timestep ``t``; x̃_t only when ``use_pcm`` and the network has
        PCM branches."""
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        prediction = network(x, timesteps, ehr, ehr_missing, x0=image, with_reconstruction=self.use_pcm)
        noise, reconstruction = split_prediction(prediction.float(), x.shape[1])
        return noise, reconstruction, network.ehr_attention

    def _jump(self, image: torch.Tensor, timestep: int) -> torch.Tensor:
        """q(x_t | x₀) by the scheduler's ``add_noise``, with each image's seeded noise (:func:`image_noise`)."""
        timesteps = torch.full((image.shape[0],), timestep, device=image.device, dtype=torch.long)
        return self.scheduler.add_noise(image, image_noise(image, self.seed), timesteps)

    def _ddim(self, x, steps, image, network, ehr, ehr_missing, alphas) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic DDIM moves (t → target) in either direction, with x̂₀ from x̃_t (PCM) and clipped.

        x̂₀ = :func:`predict_x0` (from x̃_t with PCM), ε = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t), x_target = √ᾱ_target·x̂₀ +
        √(1−ᾱ_target)·ε; the target ``CLEAN`` has ᾱ = 1. Returns the last x and the EHR attention averaged over the
        steps. Kept instead of MONAI's ``DDIMScheduler.step``/``reversed_step``: those move only along their own grid
        (t − T/num_inference_steps, not these 0…L or the authors' t ± 1 pairs), keep ε̂ when x̂₀ is clipped instead of
        re-deriving it, and cannot take x̂₀ from x̃_t.
        """
        attention_sum = None
        for current, target in steps:
            predicted_noise, reconstruction, attention = self._predict(network, x, current, image, ehr, ehr_missing)
            alpha = alphas[current]
            alpha_target = torch.ones_like(alpha) if target == CLEAN else alphas[target]
            source = x if reconstruction is None else reconstruction
            x0_estimate = predict_x0(source, predicted_noise, alpha, self.clip_range)
            noise = (x - alpha.sqrt() * x0_estimate) / (1 - alpha).sqrt()
            x = alpha_target.sqrt() * x0_estimate + (1 - alpha_target).sqrt() * noise
            if attention is not None:
                attention_sum = attention if attention_sum is None else attention_sum + attention
        return x, None if attention_sum is None else attention_sum / len(steps)
