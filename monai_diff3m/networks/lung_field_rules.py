"""Lung fields of a frontal chest film by threshold rules, and the plausibility check every lung mask must pass.

- :func:`lung_field_mask`: the dark regions enclosed by the body. Exact on the phantoms (it measures their anatomy),
  but on real films the lung apices and axillae often join the dark air above the shoulders, and it finds both
  lungs in about 2 of 10 films.
- :func:`separated_lung_fields`: a stricter rule for real films: eroding the dark pixels cuts the narrow bridges
  between lung and outside air, and each side keeps its largest dark region away from the image edge. It is right
  when it returns a plausible mask (about 1 film in 5 at 64x64), so it labels films to train the lung-field network
  of :mod:`monai_diff3m.networks.lung_fields`, which the ``lung_mean`` score uses.
- :func:`plausible_lung_fields`: two regions, one per side, of lung-like size, position, height and symmetry; the
  strict form picks training labels, the loose form reports how often lungs are found on a dataset.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Films are black (direct exposure) around the patient; lungs stay above this level even in thin patients.
BACKGROUND_LEVEL = 0.03


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Threshold that best separates ``values`` into two classes (Otsu): here lung air versus soft tissue.

    Kept: no dependency computes it without scikit-image (MONAI's ``ForegroundMask(threshold="otsu")`` calls it).
    """
    counts, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between)])


def _border_labels(labels: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """The connected regions of ``mask`` that touch the image border."""
    labels, count = ndimage.label(mask)
    keep = np.isin(np.arange(count + 1), _border_labels(labels))
    keep[0] = False
    return keep[labels]


def _enclosed_regions(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """The connected regions of ``mask`` that do not touch the border and have at least ``min_fraction`` of the
    largest such region's area: the lung fields, without slivers left along the body's blurred edge."""
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(count + 1))
    sizes[_border_labels(labels)] = 0
    return (sizes >= max(min_fraction * sizes.max(), 1))[labels]


def lung_field_mask(image: np.ndarray) -> np.ndarray:
    """Boolean lung-field mask of a 2-D film with intensities in [0, 1] (air dark, bone bright).

    The black air around the patient, and the pixel or two where the body's edge blurs into it, are excluded even
    where a thin chest wall joins them to a lung. Returns an all-False mask when no enclosed dark region exists.
    """
    if image.ndim != 2:
        raise ValueError(f"lung_field_mask expects a 2-D grayscale image, got shape {image.shape}")
    sigma = max(0.5, image.shape[1] / 128.0)
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=sigma)
    inside = smooth[smooth > BACKGROUND_LEVEL]
    dark = smooth < otsu_threshold(inside if inside.size else smooth.ravel())
    outside = ndimage.binary_dilation(_touching_border(smooth < BACKGROUND_LEVEL), iterations=2 + int(sigma))
    candidates = dark & ~outside
    if not candidates.any():
        return candidates
    return _enclosed_regions(candidates, min_fraction=0.1)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def separated_lung_fields(image: np.ndarray, edge_fraction: float = 0.05) -> np.ndarray:
    """Lung mask of a real 2-D film in [0, 1] (any window): the largest dark region of each half of the chest.

    The film is rescaled to its 1st-99th percentiles and smoothed; Otsu's threshold of the central region separates
    air from tissue; erosion by a disk of ``width / 32`` pixels cuts bridges to the air outside the body, regions that
    touch the outer ``edge_fraction`` of the film are outside air, and the largest remaining region whose centre lies
    below the top fifth of the film is kept on each side, grown back by the same disk within the dark pixels.
    The result is not always lungs: check it with :func:`plausible_lung_fields`.
    """
    if image.ndim != 2:
        raise ValueError(f"separated_lung_fields expects a 2-D grayscale image, got shape {image.shape}")
    height, width = image.shape
    low, high = np.percentile(image, [1.0, 99.0])
    scaled = np.clip((image - low) / max(high - low, 1e-8), 0.0, 1.0)
    smooth = ndimage.gaussian_filter(scaled.astype(np.float32), sigma=max(0.5, width / 128.0))
    centre = smooth[int(0.2 * height) : int(0.8 * height), int(0.1 * width) : int(0.9 * width)]
    dark = smooth < otsu_threshold(centre.ravel())
    disk = _disk(max(1, round(width / 32)))
    labels, count = ndimage.label(ndimage.binary_erosion(dark, structure=disk))
    lungs = np.zeros_like(dark)
    if count == 0:
        return lungs
    band = max(1, round(edge_fraction * width))
    edge = np.zeros_like(dark)
    edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
    indices = np.arange(count + 1)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=indices)
    sizes[np.unique(labels[edge])] = 0
    sizes[0] = 0
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, index=indices[1:]))
    for left_side in (True, False):
        on_side = (centres[:, 1] < width / 2) == left_side
        candidates = np.flatnonzero(on_side & (centres[:, 0] > 0.2 * height) & (sizes[1:] > 0)) + 1
        if candidates.size:
            best = candidates[np.argmax(sizes[candidates])]
            lungs |= ndimage.binary_dilation(labels == best, structure=disk) & dark
    return ndimage.binary_fill_holes(lungs)


#: (min area, max area, max area ratio, centre rows, min height), as fractions of the film, for each strictness.
_PLAUSIBLE_LUNGS = {
    "strict": (0.04, 0.25, 2.5, (0.30, 0.70), 0.35),
    "loose": (0.02, 0.30, 3.0, (0.15, 0.75), 0.20),
}


def plausible_lung_fields(mask: np.ndarray, strictness: str = "loose") -> bool:
    """Whether ``mask`` looks like two lungs: exactly two regions, one in each half of the film, with lung-like area,
    symmetry, vertical position and height (:data:`_PLAUSIBLE_LUNGS`).

    ``"strict"`` accepts only typical, well-centred PA lungs: it picks training labels for the lung-field network,
    where a wrong label costs more than a missed one. ``"loose"`` also accepts short, high or small lungs (AP films,
    obese patients, children): it is the "both lungs found" check reported on datasets, whose rejections are then
    looked at by eye (``benchmarks/lung_fields.py`` writes the montages).
    """
    min_area, max_area, max_ratio, (top, bottom), min_height = _PLAUSIBLE_LUNGS[strictness]
    height, width = mask.shape
    labels, count = ndimage.label(mask)
    if count != 2:
        return False
    indices = [1, 2]
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=indices) / mask.size
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, index=indices))
    heights = [np.ptp(np.nonzero(labels == index)[0]) / height for index in indices]
    return bool(
        (centres[0, 1] < width / 2) != (centres[1, 1] < width / 2)
        and (areas > min_area).all()
        and (areas < max_area).all()
        and areas.max() / areas.min() < max_ratio
        and ((centres[:, 0] > top * height) & (centres[:, 0] < bottom * height)).all()
        and min(heights) > min_height
    )
