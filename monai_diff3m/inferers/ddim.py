"""The DDIM schedule of anomaly scoring (docs/method.md §4): which timesteps an image visits on its way to noise level
L and back, the x̂₀ every step predicts, and the deterministic (η = 0) walk along those steps.

Kept apart from the inferer so that a schedule can be named, counted (network evaluations) and compared in studies
without a network, and so that the walk is one function whichever network, EHR or PCM branch predicts the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.networks.schedulers import Scheduler

NOISING_MODES = ("ddim_inversion", "stochastic")
#: How DDIM steps are indexed, see ``ddim_steps``.
DDIM_INDEXINGS = ("aligned", "authors")
#: How a schedule with every timestep between 0 and L is named (``num_steps=None``).
FULL_SCHEDULE = "full"
#: The timestep of the clean image in ``ddim_steps``: ᾱ = 1 there.
CLEAN = -1

#: One network evaluation at timestep t on x_t: (ε̂, the PCM reconstruction x̃_t or None, EHR attention or None).
NoisePrediction = tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]


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

#: The image size the bundle's noise level was chosen at (``noise_level_at_64`` in ``inference.json``).
NOISE_LEVEL_REFERENCE_SIZE = 64


def size_matched_noise_level(
    noise_level: int, image_size: int, scheduler: Scheduler, reference_size: int = NOISE_LEVEL_REFERENCE_SIZE
) -> int:
    """The timestep that noises an ``image_size`` film as much as ``noise_level`` noises a ``reference_size`` film.

    Why: a timestep adds the same noise per pixel at every size, but a film's content is spread over (size/64)² as
    many pixels at a larger size. Averaged over the coarse structures a lesion occupies (and that ``lowpass_mse``
    reads), the noise's variance falls by that factor, so the same t leaves (size/64)² times the signal-to-noise
    ratio: at 128x128, L=200 hardly disturbs what the twin should replace, and lesions come back as they went in.
    The matched level is the last timestep whose SNR = ᾱ/(1−ᾱ) is still at least the reference level's divided by
    (size/64)², the resolution shift of Hoogeboom et al. (simple diffusion, ICML 2023). At ``reference_size`` it is
    ``noise_level`` itself.
    """
    if image_size < 1 or reference_size < 1:
        raise ValueError(f"image sizes must be positive, got image_size={image_size}, reference_size={reference_size}")
    alphas_cumprod = scheduler.alphas_cumprod.double()
    if not 0 <= noise_level < len(alphas_cumprod):
        raise ValueError(f"noise_level must be within [0, T={len(alphas_cumprod)}), got {noise_level}")
    log_snr = (alphas_cumprod / (1 - alphas_cumprod)).log()  # falls with t
    target = log_snr[noise_level] - 2 * math.log(image_size / reference_size)
    return max(int((log_snr >= target).sum()) - 1, 0)


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


def predict_x0(
    noisy: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, clip_range: Sequence[float]
) -> torch.Tensor:
    """x̂₀ = clip((x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, ``clip_range``): the one x̂₀ of the package (every DDIM step, the
    validation grids). ``noisy`` is x_t, or the PCM reconstruction x̃_t; ``alpha_bar`` broadcasts against it."""
    return ((noisy - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()).clamp(*clip_range)


def ddim_walk(
    x: torch.Tensor,
    steps: Sequence[tuple[int, int]],
    predict: Callable[[torch.Tensor, int], NoisePrediction],
    alphas_cumprod: torch.Tensor,
    clip_range: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic DDIM moves (t → target) along ``steps``, in either direction; returns the last x and the EHR
    attention averaged over the steps (None when ``predict`` gives none).

    Each step: x̂₀ = :func:`predict_x0` from x̃_t when ``predict`` returns a reconstruction (PCM), else from x_t;
    ε = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t); x_target = √ᾱ_target·x̂₀ + √(1−ᾱ_target)·ε, where the target ``CLEAN`` has ᾱ = 1.
    Kept instead of MONAI's ``DDIMScheduler.step``/``reversed_step``: those move only along their own grid
    (t − T/num_inference_steps, not these 0…L or the authors' t ± 1 pairs), keep ε̂ when x̂₀ is clipped instead of
    re-deriving it, and cannot take x̂₀ from x̃_t.
    """
    attention_sum = None
    for current, target in steps:
        predicted_noise, reconstruction, attention = predict(x, current)
        alpha = alphas_cumprod[current]
        alpha_target = torch.ones_like(alpha) if target == CLEAN else alphas_cumprod[target]
        source = x if reconstruction is None else reconstruction
        x0_estimate = predict_x0(source, predicted_noise, alpha, clip_range)
        noise = (x - alpha.sqrt() * x0_estimate) / (1 - alpha).sqrt()
        x = alpha_target.sqrt() * x0_estimate + (1 - alpha_target).sqrt() * noise
        if attention is not None:
            attention_sum = attention if attention_sum is None else attention_sum + attention
    return x, None if attention_sum is None else attention_sum / len(steps)
