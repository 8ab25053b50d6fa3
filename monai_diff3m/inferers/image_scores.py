"""Image scores (docs/method.md §4): how a film, its normal twin and their difference become one number per film.

The scores are a registry, so that a score is chosen by name in a config (``Diff3MAnomalyInferer(scores=...)``,
``inference.json``'s ``score_names`` and ``score``) and a user can add one from their own package without editing
this one::

    # my_scores.py
    from monai_diff3m.inferers import ScoreInputs, register_image_score

    @register_image_score("p95_smoothed")
    def p95_smoothed(inputs: ScoreInputs) -> torch.Tensor:
        return torch.quantile(inputs.smoothed_map.flatten(1), 0.95, dim=1)

then score with ``--score_modules "['my_scores']" --score_names "['lowpass_mse', 'p95_smoothed']"``: the inferer
imports the modules (which registers their scores) before it looks the names up.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.networks.layers import GaussianFilter

from monai_diff3m.networks.lung_field_rules import plausible_lung_fields
from monai_diff3m.networks.lung_fields import LungFieldSegmenter

#: (N, 1, H, W) films -> (N, 1, H, W) boolean lung masks, e.g. ``LungFieldSegmenter``.
LungSegmenter = Callable[[torch.Tensor], torch.Tensor]
#: Gaussian sigma of ``lowpass_mse`` in pixels per 64 pixels of image side (4 pixels at 64x64, 16 at 256x256), so
#: that the band it keeps is the same fraction of the chest at every image size.
LOWPASS_SIGMA_PER_64_PIXELS = 4.0


@functools.lru_cache(maxsize=1)
def shipped_lung_segmenter() -> LungFieldSegmenter:
    """The shipped lung-field network, loaded once per process (the inferer's default ``lung_segmenter``)."""
    return LungFieldSegmenter()


@dataclass
class ScoreInputs:
    """What a score reads for a batch: the scored ``image`` and its ``twin`` (N, 1, H, W) in the image range, the
    ``smoothed_map`` (the pixel anomaly map |image − twin| after the inferer's Gaussian), and the segmenter that
    ``lung_masks`` runs only when a score asks for them."""

    image: torch.Tensor
    twin: torch.Tensor
    smoothed_map: torch.Tensor
    lung_segmenter: LungSegmenter

    @property
    def difference(self) -> torch.Tensor:
        """The signed difference image − twin."""
        return self.image - self.twin

    @functools.cached_property
    def lung_masks(self) -> torch.Tensor:
        """Lung fields of each normal twin (N, 1, H, W); the twin, not the input, so a lesion that fills a lung
        cannot hide it. A twin whose mask is not two plausible lungs (``plausible_lung_fields``, e.g. a blank or
        non-chest image) gets an all-True mask: its ``lung_mean`` is the whole-image mean."""
        masks = self.lung_segmenter(self.twin.float())
        implausible = torch.tensor(
            [not plausible_lung_fields(mask[0].cpu().numpy()) for mask in masks], device=masks.device
        )
        return masks | implausible.view(-1, 1, 1, 1)


#: A score: the batch's ``ScoreInputs`` -> one value per film, shape (N,); higher means more anomalous.
ImageScore = Callable[[ScoreInputs], torch.Tensor]
_REGISTRY: dict[str, ImageScore] = {}


def register_image_score(name: str, score: ImageScore | None = None) -> Callable[[ImageScore], ImageScore]:
    """Register ``score`` under ``name``, or, without ``score``, return a decorator that does.

    A name can be registered once: a second function under a taken name would silently change what every config
    naming it computes, so it raises instead (registering the same function again, as a re-imported module does,
    is allowed).
    """

    def register(function: ImageScore) -> ImageScore:
        if _REGISTRY.get(name, function) is not function:
            raise ValueError(f"an image score named {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = function
        return function

    if score is not None:
        register(score)
    return register


def registered_image_scores() -> tuple[str, ...]:
    """Every registered score name, the package's own first, in registration order."""
    return tuple(_REGISTRY)


def import_score_modules(modules: Sequence[str]) -> None:
    """Import the named modules, which register their scores; a module that cannot be imported is named."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"score module {module!r} cannot be imported: {error}") from error


def image_score(name: str) -> ImageScore:
    """The registered score ``name``; an unknown name is an error that lists the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown image score {name!r}; registered: {list(_REGISTRY)} (a score of your own must be registered "
            "with register_image_score in a module named in score_modules)"
        )
    return _REGISTRY[name]


def compute_image_scores(names: Sequence[str], inputs: ScoreInputs) -> dict[str, torch.Tensor]:
    """The scores ``names`` of a batch, each of shape (N,), in the order named."""
    return {name: image_score(name)(inputs) for name in names}


def lowpass_sigma(image_size: int) -> float:
    """``lowpass_mse``'s Gaussian sigma in pixels for square images of side ``image_size``."""
    return LOWPASS_SIGMA_PER_64_PIXELS * image_size / 64


def _minmax(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def _normalized_difference(inputs: ScoreInputs) -> torch.Tensor:
    return _minmax(inputs.image) - _minmax(inputs.twin)


@register_image_score("mse")
def mse(inputs: ScoreInputs) -> torch.Tensor:
    """Mean squared difference (the authors')."""
    return inputs.difference.pow(2).flatten(1).mean(dim=1)


@register_image_score("mse_normalized")
def mse_normalized(inputs: ScoreInputs) -> torch.Tensor:
    """Mean squared difference after min-max scaling film and twin each to [0, 1] (the authors')."""
    return _normalized_difference(inputs).pow(2).flatten(1).mean(dim=1)


@register_image_score("max")
def max_difference(inputs: ScoreInputs) -> torch.Tensor:
    """Largest absolute difference (the authors')."""
    return inputs.difference.abs().flatten(1).amax(dim=1)


@register_image_score("max_normalized")
def max_normalized(inputs: ScoreInputs) -> torch.Tensor:
    """Largest absolute difference after min-max scaling (the authors')."""
    return _normalized_difference(inputs).abs().flatten(1).amax(dim=1)


@register_image_score("p99_smoothed")
def p99_smoothed(inputs: ScoreInputs) -> torch.Tensor:
    """99th percentile of the smoothed map: a small lesion's peak, robust to single noisy pixels."""
    return torch.quantile(inputs.smoothed_map.flatten(1), 0.99, dim=1)


@register_image_score("lung_mean")
def lung_mean(inputs: ScoreInputs) -> torch.Tensor:
    """Mean of the smoothed map inside the twin's lung fields."""
    lungs = inputs.lung_masks.to(inputs.smoothed_map.dtype)
    return (inputs.smoothed_map * lungs).flatten(1).sum(dim=1) / lungs.flatten(1).sum(dim=1)


@register_image_score("lowpass_mse")
def lowpass_mse(inputs: ScoreInputs) -> torch.Tensor:
    """Energy of the *signed* difference after a Gaussian of :func:`lowpass_sigma`.

    A deterministic DDIM round trip reproduces a film almost exactly; what it does not reproduce splits into fine
    detail (ribs, edges, grain), which is most of the residual's energy and can be larger on crisp normal films than
    on abnormal ones, and a smooth shift towards normal anatomy where the film is not normal. Squaring before
    smoothing (``mse``, ``p99_smoothed``) keeps the first, which is how those scores read below chance on real films;
    smoothing before squaring keeps the second (measured in the bundle docs, "Real films").
    """
    image = inputs.image
    lowpass = GaussianFilter(spatial_dims=2, sigma=lowpass_sigma(image.shape[-1])).to(image.device)
    return lowpass(inputs.difference).pow(2).flatten(1).mean(dim=1)


#: The package's image scores of docs/method.md §4, in report order: the authors' four first, then ours.
SCORE_NAMES = registered_image_scores()
#: The score ``scores.csv`` stands behind (``anomaly_score``): the one that holds on every real set (bundle docs).
DEFAULT_SCORE = "lowpass_mse"
