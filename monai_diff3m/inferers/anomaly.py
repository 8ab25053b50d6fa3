"""Anomaly inference (docs/method.md §4): noise an image to level L, denoise it under its own EHR, compare.

The denoised image is a normal-looking twin: the model only learnt normal anatomy for this EHR, so what it cannot
reproduce is anomalous. ``noising="ddim_inversion"`` is the authors' (deterministic DDIM inversion to L);
``noising="stochastic"`` jumps to L with q(x_t | x₀) using per-image seeded noise (AnoDDPM-style), which halves the
network evaluations and erases small lesions more reliably. Both denoise with deterministic DDIM (η = 0). Every
step, in both directions, predicts x̂₀ the same way: from x̃_t instead of x_t when the network has PCM branches,
clipped to ``clip_range``; the update re-derives ε from the real x_t (the authors' code does the same both ways).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.networks.layers import GaussianFilter
from monai.networks.schedulers import Scheduler

from monai_diff3m.inferers.ddim import NOISING_MODES, NoisePrediction, ScoringSchedule, ddim_steps, ddim_walk
from monai_diff3m.inferers.image_scores import (
    SCORE_NAMES,
    LungSegmenter,
    ScoreInputs,
    compute_image_scores,
    image_score,
    import_score_modules,
    shipped_lung_segmenter,
)
from monai_diff3m.inferers.precision import network_autocast
from monai_diff3m.networks.diff3m_unet import split_prediction
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE

logger = logging.getLogger(__name__)


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
        scores: the image scores computed for every film, by registered name (``image_scores``); default the
            package's own, in report order.
        score_modules: modules imported first, which register scores of the user's own for ``scores``.
        lung_segmenter: (N, 1, H, W) films -> boolean lung masks, for ``lung_mean``; default the shipped
            ``LungFieldSegmenter``, loaded on first use.
        autocast_dtype: run every network evaluation under autocast to this dtype (``torch.bfloat16``) on the
            input's device; the DDIM updates, maps and scores stay float32. None: float32 throughout.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        noise_level: int = 330,
        num_steps: int | None = 10,
        noising: str = "ddim_inversion",
        smoothing_sigma: float = 1.0,
        seed: int = 0,
        use_pcm: bool = False,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        clip_range: Sequence[float] | None = None,
        indexing: str = "aligned",
        scores: Sequence[str] = SCORE_NAMES,
        score_modules: Sequence[str] = (),
        lung_segmenter: LungSegmenter | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        import_score_modules(score_modules)
        for name in scores:
            image_score(name)  # an unknown name fails here, before any film is scored
        if not scores:
            raise ValueError("scores must name at least one image score")
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
        self.score_names = tuple(scores)
        self.lung_segmenter = lung_segmenter
        self.autocast_dtype = autocast_dtype
        # the level may be derived (inference.json matches it to the image size): say which one scores
        schedule = ScoringSchedule(noising, noise_level, num_steps, indexing)
        logger.info("scoring schedule: %s, %d network evaluations per film", schedule.name, schedule.evaluations)

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
        # maps and scores in float32 even when a caller wraps scoring in bf16 autocast (quantiles need floats)
        with torch.autocast(image.device.type, enabled=False):
            twin = twin.float().clamp(*self.clip_range)
            anomaly_map = (image - twin).abs()
            smoothed = anomaly_map
            if self.smoothing_sigma > 0:
                smoothed = GaussianFilter(spatial_dims=2, sigma=self.smoothing_sigma).to(image.device)(anomaly_map)
            segmenter = self.lung_segmenter or shipped_lung_segmenter()
            scores = compute_image_scores(self.score_names, ScoreInputs(image, twin, smoothed, segmenter))
        return {
            "twin": twin,
            "anomaly_map": anomaly_map,
            "smoothed_map": smoothed,
            "scores": scores,
            "ehr_attention": attention,
        }

    def _predict(self, network, x, t, image, ehr, ehr_missing) -> NoisePrediction:
        """(ε̂, x̃_t or None, EHR attention or None) at timestep ``t``; x̃_t only when ``use_pcm`` and the network has
        PCM branches."""
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        with network_autocast(x.device.type, self.autocast_dtype):
            prediction = network(x, timesteps, ehr, ehr_missing, x0=image, with_reconstruction=self.use_pcm)
        noise, reconstruction = split_prediction(prediction.float(), x.shape[1])
        attention = network.ehr_attention
        return noise, reconstruction, None if attention is None else attention.float()

    def _jump(self, image: torch.Tensor, timestep: int) -> torch.Tensor:
        """q(x_t | x₀) by the scheduler's ``add_noise``, with each image's seeded noise (:func:`image_noise`)."""
        timesteps = torch.full((image.shape[0],), timestep, device=image.device, dtype=torch.long)
        return self.scheduler.add_noise(image, image_noise(image, self.seed), timesteps)

    def _ddim(self, x, steps, image, network, ehr, ehr_missing, alphas) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:func:`ddim_walk` along ``steps`` with this network's noise prediction under the film's EHR."""

        def predict(noisy: torch.Tensor, timestep: int) -> NoisePrediction:
            return self._predict(network, noisy, timestep, image, ehr, ehr_missing)

        return ddim_walk(x, steps, predict, alphas, self.clip_range)
