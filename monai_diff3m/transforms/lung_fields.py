"""Lung fields of a frontal chest film: the dark regions enclosed by the body.

A segmentation network would be more robust on real films, but this threshold rule needs no weights: lungs are
darker than the soft tissue around them (Otsu's threshold separates the two) and, unlike the black air around the
patient, they do not touch the image border. It restricts the ``lung_mean`` anomaly score to the lungs and measures
the phantoms' anatomy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Films are black (direct exposure) around the patient; lungs stay above this level even in thin patients.
BACKGROUND_LEVEL = 0.03


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Threshold that best separates ``values`` into two classes (Otsu): here lung air versus soft tissue."""
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
