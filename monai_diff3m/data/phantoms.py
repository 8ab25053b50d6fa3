"""Synthetic chest X-ray phantoms with EHR: the project's embedded, download-free default dataset.

Real CheXpert/MIMIC data is credentialed, so the bundle trains and benchmarks on these phantoms. They are built to
exercise exactly what Diff3M claims: normal anatomy varies a lot across patients, but that variation is explained by
the EHR. Heart size (cardiothoracic ratio) grows with age and systolic pressure, is larger in men and is magnified in
AP films; lung height follows the patient's height; thorax width, soft-tissue brightness and lung contrast follow
BMI. Only a few percent of each size is unexplained per-patient noise. An image-only model must therefore accept
every heart in the wide population range as normal, while an EHR-conditioned model can tell that a given heart is
too big *for this patient* (the ``cardiomegaly`` lesion is made that way).

Layout is CheXpert's, with columns from :mod:`monai_diff3m.schema`::

    root/images/<split>/<id>.png   8-bit grayscale films, one folder per split so a split can be scored alone
    root/masks/<id>.png    0/255 lesion masks (abnormal images only)
    root/train.csv         normals only
    root/valid.csv, root/test.csv   normals and abnormals (abnormal share = ``anomaly_fraction``)
    root/phantoms.json     the generation parameters (used by :func:`ensure_phantom_dataset`)

Every image is reproducible on its own: its EHR, anatomy, lesion and missing-value draws come from generators keyed
by ``[seed, index, stream]``, so image ``index`` depends only on the seed and on which lesion (if any) it was given;
:func:`render_case` re-renders any of them in memory.

Every field of ``schema.EHR_FIELDS`` gets a column. The phantoms simulate sex, age, view and MIMIC's five
measurements (:meth:`PatientEHR.values`); a field added to the table without a simulation is drawn independently of
the anatomy (a number in the middle half of its plausible range, or a category), so the film says nothing about it
and a model can only learn that it does not matter.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from monai_diff3m import schema
from monai_diff3m.data.phantom_folder import PARAMETERS_FILE
from monai_diff3m.networks.lung_field_rules import lung_field_mask

__all__ = [
    "LESION_TYPES",
    "PatientEHR",
    "PhantomCase",
    "ChestMeasurements",
    "render_case",
    "measure_chest",
    "generate_phantom_dataset",
    "ensure_phantom_dataset",
    "main",
]

LESION_TYPES = ("nodule", "consolidation", "effusion", "cardiomegaly")
SPLITS = ("train", "valid", "test")
GENERATOR = "monai_diff3m.data.phantoms"
FORMAT_VERSION = 2
MIN_IMAGE_SIZE = 32
"""Below 32 pixels a nodule (radius 4.5-6.5% of the film) shrinks under 1.5 pixels and is no longer a fair test."""

CARDIOMEGALY_ENLARGEMENT = (1.25, 1.40)
"""Heart enlargement relative to what the patient's EHR predicts, for the ``cardiomegaly`` lesion."""
_CTR_REFERENCE_SEED = 20250522
"""Seed of the fixed normal population that defines the normal heart-size range for ``cardiomegaly``."""

_EHR_STREAM, _ANATOMY_STREAM, _LESION_STREAM, _MISSING_STREAM, _UNSIMULATED_STREAM = 1, 2, 3, 4, 5
_MALE, _FEMALE = schema.SEX_VALUES
_AP, _PA = schema.VIEW_VALUES


@dataclass(frozen=True)
class PatientEHR:
    """The true EHR of one phantom patient; the anatomy is drawn from it (the CSV may hide some values).

    Units follow MIMIC-IV ``omr``: BMI kg/m2, blood pressure mmHg, height inches, weight lbs.
    """

    sex: str
    age: int
    view: str
    bmi: float
    systolic: float
    diastolic: float
    height: float
    weight: float

    def values(self) -> dict[str, Any]:
        """The simulated EHR by schema column."""
        return {
            schema.SEX: self.sex,
            schema.AGE: self.age,
            schema.VIEW: self.view,
            schema.BMI: self.bmi,
            schema.SYSTOLIC: self.systolic,
            schema.DIASTOLIC: self.diastolic,
            schema.HEIGHT: self.height,
            schema.WEIGHT: self.weight,
        }


@dataclass(frozen=True)
class PhantomCase:
    """One rendered film: ``image`` is float32 (H, W) in [0, 1]; ``mask`` is bool (H, W) for abnormal cases."""

    ehr: PatientEHR
    image: np.ndarray
    mask: np.ndarray | None
    lesion: str | None


@dataclass(frozen=True)
class ChestMeasurements:
    """Sizes read off a film, as fractions of the image height (lung) or width (heart, thorax)."""

    heart_width: float
    thoracic_width: float
    lung_height: float

    @property
    def cardiothoracic_ratio(self) -> float:
        """The radiologist's CTR: widest heart diameter over widest inner thorax diameter."""
        return self.heart_width / self.thoracic_width


@dataclass(frozen=True)
class _Anatomy:
    """Geometry and densities of one normal chest in image-fraction units (x, y in [0, 1], y downwards)."""

    apex_y: float
    lung_height: float
    thorax_half: float
    mediastinum_half: float
    body_half: float
    dome_height: float
    tissue_level: float
    lung_depth: float
    heart_half_width: float
    ap_view: bool


# ----------------------------------------------------------------------------------------------------- EHR


def _sample_ehr(rng: np.random.Generator) -> PatientEHR:
    """Draw a plausible joint EHR: AP films are likelier in older (inpatient) patients, BP rises with age and BMI."""
    sex = _MALE if rng.random() < 0.5 else _FEMALE
    age = int(round(np.clip(rng.normal(58.0, 18.0), 18.0, 95.0)))
    p_ap = 0.15 + 0.65 / (1.0 + np.exp(-(age - 65.0) / 8.0))
    view = _AP if rng.random() < p_ap else _PA
    height = float(rng.normal(69.0 if sex == _MALE else 64.0, 3.0))
    height = round(float(np.clip(height, 56.0, 80.0)), 1)
    bmi = round(float(np.clip(rng.normal(27.0, 5.0), 16.0, 45.0)), 1)
    weight = round(bmi * height**2 / 703.0, 1)
    systolic = 108.0 + 0.45 * (age - 18) + 4.0 * (sex == _MALE) + 0.6 * (bmi - 27.0) + rng.normal(0.0, 12.0)
    systolic = float(round(np.clip(systolic, 85.0, 210.0)))
    diastolic = 70.0 + 0.12 * (age - 40) + 0.4 * (bmi - 27.0) + rng.normal(0.0, 8.0)
    diastolic = float(round(np.clip(diastolic, 40.0, systolic - 20.0)))
    return PatientEHR(sex, age, view, bmi, systolic, diastolic, height, weight)


def _expected_ctr(ehr: PatientEHR) -> float:
    """Cardiothoracic ratio that the EHR predicts: young female PA 0.40 up to about 0.56 for old male AP films."""
    age_factor = 1.0 + 0.13 * (ehr.age - 18.0) / 77.0
    sex_factor = 1.06 if ehr.sex == _MALE else 1.0
    view_factor = 1.17 if ehr.view == _AP else 1.0
    pressure_factor = 1.0 + 0.001 * (ehr.systolic - 125.0)
    return 0.40 * age_factor * sex_factor * view_factor * pressure_factor


@functools.lru_cache(maxsize=1)
def _normal_ctr_limit() -> float:
    """97.5th percentile of the EHR-predicted cardiothoracic ratio over a fixed sample of 4000 normal patients."""
    rng = np.random.default_rng(_CTR_REFERENCE_SEED)
    return float(np.percentile([_expected_ctr(_sample_ehr(rng)) for _ in range(4000)], 97.5))


def _sample_cardiomegaly_ehr(rng: np.random.Generator, enlargement: float, max_tries: int = 500) -> PatientEHR:
    """Draw a patient whose enlarged heart stays below the 97.5th percentile of normal hearts.

    Inside the normal range the image alone does not give the enlargement away; only the mismatch with the EHR does.
    With a 25-40% enlargement and a normal range about 50% wide, only patients with a small predicted heart
    qualify, so cardiomegaly cases are younger, mostly female and PA (an enlarged AP heart is never in range).
    After ``max_tries`` the candidate with the smallest enlarged heart is kept.
    """
    limit = _normal_ctr_limit()
    best, best_ctr = None, np.inf
    for _ in range(max_tries):
        candidate = _sample_ehr(rng)
        enlarged_ctr = enlargement * _expected_ctr(candidate)
        if enlarged_ctr <= limit:
            return candidate
        if enlarged_ctr < best_ctr:
            best, best_ctr = candidate, enlarged_ctr
    if best is None:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")
    return best


def _anatomy(ehr: PatientEHR, rng: np.random.Generator) -> _Anatomy:
    """Turn the EHR into chest geometry; the residual noise (1-3% of each size) is all that the EHR cannot explain."""
    bmi_offset = ehr.bmi - 27.0
    lung_height = 0.58 + 0.0105 * (ehr.height - 66.5) + rng.normal(0.0, 0.008)
    thorax_half = 0.335 + 0.0025 * bmi_offset + 0.012 * (ehr.sex == _MALE) + rng.normal(0.0, 0.004)
    soft_tissue = max(0.04, 0.05 + 0.003 * bmi_offset)
    ctr = _expected_ctr(ehr) * np.exp(rng.normal(0.0, 0.02))
    return _Anatomy(
        apex_y=0.11 + rng.normal(0.0, 0.006),
        lung_height=float(np.clip(lung_height, 0.42, 0.74)),
        thorax_half=float(thorax_half),
        mediastinum_half=0.052 + rng.normal(0.0, 0.002),
        body_half=float(min(thorax_half + soft_tissue, 0.495)),
        dome_height=0.045 + rng.normal(0.0, 0.004),
        tissue_level=0.68 + 0.006 * bmi_offset,
        lung_depth=0.40 - 0.005 * bmi_offset,
        heart_half_width=float(ctr * thorax_half),
        ap_view=ehr.view == _AP,
    )


# ----------------------------------------------------------------------------------------------------- rendering


class _Canvas:
    """Pixel-centre coordinates of an (S, S) film in [0, 1] and an anti-aliased inside test for implicit shapes."""

    def __init__(self, size: int):
        self.size = size
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x = centres[None, :]
        self.y = centres[:, None]

    def soft(self, distance: np.ndarray) -> np.ndarray:
        """Coverage in [0, 1] from a signed distance (positive inside, image-fraction units), ramped over a pixel."""
        return np.clip(distance * self.size + 0.5, 0.0, 1.0)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        radius = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return self.soft((1.0 - radius) * min(rx, ry))

    def segment(self, start: tuple[float, float], end: tuple[float, float], half_thickness: float) -> np.ndarray:
        (x0, y0), (x1, y1) = start, end
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((self.x - x0) * dx + (self.y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        distance = np.hypot(self.x - (x0 + t * dx), self.y - (y0 + t * dy))
        return self.soft(half_thickness - distance)

    def smooth_noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth random field with about ``cells`` blobs across the film, unit standard deviation.

        Random weights on a ``cells`` x ``cells`` grid of Gaussian bumps, summed with two small matrix products:
        an order of magnitude faster than spline-zooming a coarse grid, which dominated the rendering time.
        """
        basis, basis_transposed = _bump_basis(self.size, cells)
        field = basis @ rng.normal(size=(cells + 2, cells + 2)).astype(np.float32) @ basis_transposed
        return (field - field.mean()) / (field.std() + 1e-6)


@functools.lru_cache(maxsize=16)
def _bump_basis(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, cells + 2) matrix of Gaussian bumps one grid step wide, one extra bump beyond each border, and its
    transpose as a contiguous copy (OpenBLAS multiplies by a transposed view about 1000 times slower)."""
    centres = (np.arange(cells + 2, dtype=np.float32) - 0.5) / cells
    pixels = (np.arange(size, dtype=np.float32) + 0.5) / size
    basis = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) * cells) ** 2)
    return basis, np.ascontiguousarray(basis.T)


def _heart(canvas: _Canvas, anatomy: _Anatomy, enlargement: float = 1.0) -> np.ndarray:
    """Cardiac silhouette: widest just above the diaphragm, bulging to the image right (the patient's left).

    The upper half is an ellipse; the lower half is three times taller, so the heart runs into the diaphragm and
    abdomen (cardiophrenic angles) instead of floating as a ball. Its widest row is ``2 * heart_half_width``.
    """
    rx = anatomy.heart_half_width * enlargement
    ry = 0.8 * rx
    cx = 0.5 + 0.32 * rx
    cy = anatomy.apex_y + anatomy.lung_height - anatomy.dome_height - 0.35 * ry
    vertical = np.where(canvas.y < cy, ry, 3.0 * ry)
    radius = np.sqrt(((canvas.x - cx) / rx) ** 2 + ((canvas.y - cy) / vertical) ** 2)
    return canvas.soft((1.0 - radius) * np.minimum(rx, vertical))


def _lung_fields(canvas: _Canvas, anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Both lung shapes (air before anything occludes it) and the lateral position t in [0, 1] inside each lung."""
    x, y = canvas.x, canvas.y
    shapes, laterals = [], []
    for side in (-1.0, 1.0):
        u = side * (x - 0.5)
        medial = np.full_like(y, anatomy.mediastinum_half)
        if side > 0:
            knob_y = anatomy.apex_y + 0.2 * anatomy.lung_height
            medial = medial + 0.03 * np.exp(-(((y - knob_y) / 0.035) ** 2))
        width = anatomy.thorax_half - anatomy.mediastinum_half
        lateral = np.clip((u - anatomy.mediastinum_half) / width, 0.0, 1.0)
        half_height = 0.5 * anatomy.lung_height
        radius = np.sqrt(
            (np.abs(u - anatomy.mediastinum_half - width / 2) / (width / 2)) ** 2.2
            + (np.maximum(anatomy.apex_y + half_height - y, 0.0) / half_height) ** 2.2
        ) ** (1.0 / 2.2)
        costophrenic_y = anatomy.apex_y + anatomy.lung_height + (0.015 if side > 0 else 0.0)
        dome = costophrenic_y - anatomy.dome_height * np.clip(1.0 - ((lateral - 0.45) / 0.55) ** 2, 0.0, 1.0)
        shape = np.minimum(
            np.minimum(canvas.soft((1.0 - radius) * width / 2), canvas.soft(u - medial)), canvas.soft(dome - y)
        )
        shapes.append(shape)
        laterals.append(lateral * (shape > 0))
    return shapes[0] + shapes[1], laterals[0] + laterals[1]


def _bones(canvas: _Canvas, anatomy: _Anatomy) -> np.ndarray:
    """Faint ribs, the spine, clavicles (higher and flatter on AP films) and scapulae (over the lungs on AP films)."""
    x, y = canvas.x, canvas.y
    u = np.abs(x - 0.5)
    spacing = anatomy.lung_height / 8.5
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (y - anatomy.apex_y - 0.9 * (u - 0.05) ** 2) / spacing)) ** 6
    ribs = ribs * canvas.soft(anatomy.thorax_half - u) * canvas.soft(anatomy.apex_y + anatomy.lung_height - y)
    density = 0.045 * ribs + 0.05 * canvas.soft(0.03 - u)
    if anatomy.ap_view:
        medial_y, lateral_y, scapula_u = anatomy.apex_y + 0.01, anatomy.apex_y - 0.005, anatomy.thorax_half - 0.03
    else:
        medial_y, lateral_y, scapula_u = anatomy.apex_y + 0.06, anatomy.apex_y + 0.015, anatomy.thorax_half + 0.06
    scapula_y = anatomy.apex_y + 0.22 * anatomy.lung_height
    for side in (-1.0, 1.0):
        clavicle = canvas.segment((0.5 + side * 0.035, medial_y), (0.5 + side * 0.3, lateral_y), 0.015)
        scapula = canvas.ellipse(0.5 + side * scapula_u, scapula_y, 0.055, 0.13)
        density = density + 0.11 * clavicle + 0.06 * scapula
    return density


def _lesion_location(air: np.ndarray, rng: np.random.Generator, margin_px: float) -> tuple[float, float]:
    """A random point well inside the visible lung air (at least ``margin_px`` pixels from its edge)."""
    distance = ndimage.distance_transform_edt(air > 0.95)
    candidates = np.argwhere(distance > margin_px)
    if len(candidates) == 0:
        candidates = np.argwhere(distance >= distance.max())
    row, col = candidates[rng.integers(len(candidates))]
    size = air.shape[0]
    return (col + 0.5) / size, (row + 0.5) / size


def _nodule(canvas: _Canvas, air: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small round opacity: radius 4.5-6.5% of the film (3-4 pixels at 64), fully inside a lung."""
    radius = rng.uniform(0.045, 0.065)
    cx, cy = _lesion_location(air, rng, radius * canvas.size + 1.0)
    return canvas.ellipse(cx, cy, radius, radius)


def _consolidation(canvas: _Canvas, air: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Irregular patch of 3-5 merged blobs with a noisy border, confined to the lung air it fills."""
    cx, cy = _lesion_location(air, rng, 0.06 * canvas.size)
    field = np.zeros_like(air)
    for _ in range(rng.integers(3, 6)):
        bx, by = cx + rng.normal(0.0, 0.035), cy + rng.normal(0.0, 0.035)
        sigma = rng.uniform(0.03, 0.05)
        field += np.exp(-((canvas.x - bx) ** 2 + (canvas.y - by) ** 2) / (2 * sigma**2))
    field = field * (1.0 + 0.35 * canvas.smooth_noise(rng, 10))
    return np.clip((field - 0.5) / 0.15, 0.0, 1.0) * air


def _effusion(
    canvas: _Canvas, anatomy: _Anatomy, air: np.ndarray, lateral: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Fluid filling one lung base up to a meniscus that climbs the lateral chest wall (blunted costophrenic angle)."""
    side = rng.choice((-1.0, 1.0))
    depth = rng.uniform(0.22, 0.35) * anatomy.lung_height
    level = anatomy.apex_y + anatomy.lung_height - anatomy.dome_height - depth
    surface = level + 0.3 * depth * (1.0 - lateral**2)
    this_side = canvas.soft(side * (canvas.x - 0.5))
    return canvas.soft(canvas.y - surface) * this_side * air


def render_case(seed: int, index: int, image_size: int = 64, lesion: str | None = None) -> PhantomCase:
    """Render phantom ``index`` of the dataset with ``seed``, normal or with ``lesion`` (one of LESION_TYPES).

    The same ``(seed, index)`` gives the same patient and anatomy with or without a nodule, consolidation or
    effusion, so the lesion's effect can be isolated. ``cardiomegaly`` instead draws a patient whose heart, enlarged
    25-40% beyond what the EHR predicts, still stays below the 97.5th percentile of normal hearts, so only the EHR
    reveals it. Films are oriented like PA films: the patient's left is on the image right, where the heart bulges.

    Args:
        seed: dataset seed (non-negative int).
        index: image index within the dataset (non-negative int).
        image_size: output height and width in pixels (at least 32).
        lesion: ``None`` for a normal film, otherwise the lesion to add; its pixel mask is returned.
    """
    if lesion is not None and lesion not in LESION_TYPES:
        raise ValueError(f"lesion must be one of {LESION_TYPES} or None, got {lesion!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    ehr_rng = np.random.default_rng([seed, index, _EHR_STREAM])
    anatomy_rng = np.random.default_rng([seed, index, _ANATOMY_STREAM])
    lesion_rng = np.random.default_rng([seed, index, _LESION_STREAM])
    enlargement = lesion_rng.uniform(*CARDIOMEGALY_ENLARGEMENT) if lesion == "cardiomegaly" else 1.0
    ehr = _sample_cardiomegaly_ehr(ehr_rng, enlargement) if lesion == "cardiomegaly" else _sample_ehr(ehr_rng)
    anatomy = _anatomy(ehr, anatomy_rng)
    canvas = _Canvas(image_size)

    lungs, lateral = _lung_fields(canvas, anatomy)
    heart = _heart(canvas, anatomy, enlargement)
    air = lungs * (1.0 - heart)
    neck = 0.35 + 0.65 / (1.0 + np.exp(-(canvas.y - anatomy.apex_y + 0.02) / 0.025))
    body = canvas.soft(anatomy.body_half * neck - np.abs(canvas.x - 0.5))
    texture = 0.06 * canvas.smooth_noise(anatomy_rng, 12) + 0.02 * canvas.smooth_noise(anatomy_rng, 4)
    noise = anatomy_rng.normal(0.0, 0.008, size=air.shape).astype(np.float32)

    filled = np.zeros_like(air)
    if lesion == "nodule":
        filled = _nodule(canvas, air, lesion_rng)
    elif lesion == "consolidation":
        filled = _consolidation(canvas, air, lesion_rng)
    elif lesion == "effusion":
        filled = _effusion(canvas, anatomy, air, lateral, lesion_rng)
    if lesion == "cardiomegaly":
        mask = lungs * (heart - _heart(canvas, anatomy)) >= 0.5
    else:
        mask = filled >= 0.5 if lesion else None

    air_depth = anatomy.lung_depth * (0.95 + 0.1 * lateral) * (1.0 + np.clip(texture, -0.15, 0.15))
    image = body * (anatomy.tissue_level + _bones(canvas, anatomy)) - (air - 0.95 * filled) * air_depth
    image = ndimage.gaussian_filter(image, sigma=0.6) + noise
    return PhantomCase(ehr, np.clip(image, 0.0, 1.0).astype(np.float32), mask, lesion)


# ----------------------------------------------------------------------------------------------------- measuring


def measure_chest(image: np.ndarray) -> ChestMeasurements:
    """Measure heart width, thoracic width and lung height on a phantom film (uint8 or float in [0, 1]).

    Lungs come from :func:`monai_diff3m.networks.lung_field_rules.lung_field_mask`. The heart width
    is the widest gap between the two lungs in the lower half of the lungs, above the right hemidiaphragm dome
    (below it the lung ends at the diaphragm, not at the heart). These are the measurements a radiologist takes for
    the cardiothoracic ratio. On normal phantoms they recover the rendered heart width with a spread of about 1% at
    128 pixels and 2% at 64 (about 6% at 32, where a pixel is 3% of the heart).

    Raises:
        ValueError: the image is not 2-D, or no pair of lung fields is found (not a frontal chest film).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"measure_chest expects a 2-D grayscale image, got shape {image.shape}")
    pixels = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    height, width = pixels.shape
    lungs = lung_field_mask(pixels)
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        raise ValueError("measure_chest found no lung fields (dark regions enclosed by the body)")
    midline = 0.5 * (cols.min() + cols.max())
    right_lung = lungs & (np.arange(width)[None, :] < midline)  # the patient's right lung is on the image left
    right_cols = np.nonzero(right_lung.any(axis=0))[0]
    if right_cols.size == 0 or not (lungs & ~right_lung).any():
        raise ValueError("measure_chest found only one lung field; expected one on each side of the midline")
    band = right_cols[len(right_cols) // 3 : max(len(right_cols) // 3 + 1, 2 * len(right_cols) // 3)]
    bottoms = height - 1 - np.argmax(right_lung[::-1, band], axis=0)
    dome_top = int(bottoms.min())
    first_row = int(rows.min() + 0.5 * (dome_top - rows.min()))

    column = np.arange(width)[None, :]
    section = lungs[first_row : dome_top + 1]
    left_inner = np.where(section & (column < midline), column, -1).max(axis=1)
    right_inner = np.where(section & (column > midline), column, width).min(axis=1)
    valid = (left_inner >= 0) & (right_inner < width)
    if not valid.any():
        raise ValueError("measure_chest found no row with lung on both sides of the heart above the diaphragm")
    return ChestMeasurements(
        heart_width=float((right_inner - left_inner - 1)[valid].max()) / width,
        thoracic_width=float(cols.max() - cols.min() + 1) / width,
        lung_height=float(rows.max() - rows.min() + 1) / height,
    )


# ----------------------------------------------------------------------------------------------------- dataset


def _parameters(
    num_train: int,
    num_val: int,
    num_test: int,
    image_size: int,
    anomaly_fraction: float,
    missing_fraction: float,
    lesion_types: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Validate the generation parameters and return them as the JSON-ready dict stored in ``phantoms.json``."""
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if num_train + num_val + num_test == 0:
        raise ValueError("num_train, num_val and num_test are all 0: nothing to generate")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer of at least {MIN_IMAGE_SIZE} pixels, got {image_size!r}")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise ValueError(f"anomaly_fraction must be in [0, 1], got {anomaly_fraction!r}")
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1), got {missing_fraction!r}")
    lesion_types = [lesion_types] if isinstance(lesion_types, str) else list(lesion_types)
    unknown = [lesion for lesion in lesion_types if lesion not in LESION_TYPES]
    if not lesion_types or unknown or len(set(lesion_types)) != len(lesion_types):
        raise ValueError(f"lesion_types must be distinct names from {LESION_TYPES}, got {lesion_types!r}")
    return {
        "format_version": FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "image_size": int(image_size),
        "anomaly_fraction": float(anomaly_fraction),
        "missing_fraction": float(missing_fraction),
        "lesion_types": lesion_types,
        "seed": int(seed),
    }


def _lesion_plan(parameters: dict[str, Any]) -> list[tuple[str, int, str | None]]:
    """(split, image index, lesion or None) for every image, in index order.

    Validation and test get exactly ``round(anomaly_fraction * n)`` abnormal images at random positions, and the
    lesion types are dealt out in equal shares (±1) before shuffling, so every type is represented even in small
    splits.
    """
    rng = np.random.default_rng(parameters["seed"])
    counts = {"train": parameters["num_train"], "valid": parameters["num_val"], "test": parameters["num_test"]}
    plan: list[tuple[str, int, str | None]] = []
    index = 0
    for split in SPLITS:
        count = counts[split]
        lesions: list[str | None] = [None] * count
        if split != "train":
            abnormal = int(round(parameters["anomaly_fraction"] * count))
            types = rng.permutation(np.resize(np.array(parameters["lesion_types"]), abnormal))
            for position, lesion in zip(rng.permutation(count)[:abnormal], types):
                lesions[position] = str(lesion)
        plan.extend((split, index + offset, lesion) for offset, lesion in enumerate(lesions))
        index += count
    return plan


def _optional_columns() -> list[str]:
    """The EHR columns the phantoms may leave empty: every field outside the demographics (MIMIC's measurements)."""
    demographics = schema.ehr_columns(["demographics"])
    return [column for column in schema.ehr_columns() if column not in demographics]


def _unsimulated_value(field: schema.EHRField, seed: int, index: int) -> Any:
    """A value of a field the phantoms do not simulate, drawn apart from the anatomy and from every other field."""
    rng = np.random.default_rng([seed, index, _UNSIMULATED_STREAM, zlib.crc32(field.name.encode())])
    if field.is_categorical:
        return field.categories[int(rng.integers(len(field.categories)))]
    assert field.plausible_range is not None
    low, high = field.plausible_range
    return round(float(low + (high - low) * rng.uniform(0.25, 0.75)), 1)


def _csv_row(case: PhantomCase, split: str, index: int, seed: int, missing: np.ndarray) -> dict[str, Any]:
    """The schema row of one case; the optional EHR values flagged in ``missing`` (one flag per
    :func:`_optional_columns`) are left empty, as in real records."""
    name = f"{index:06d}.png"
    simulated = case.ehr.values()
    ehr = {
        field.name: simulated[field.name] if field.name in simulated else _unsimulated_value(field, seed, index)
        for field in schema.ehr_fields()
    }
    optional = _optional_columns()
    assert len(missing) == len(optional), (len(missing), optional)
    for column, is_missing in zip(optional, missing):
        if is_missing:
            ehr[column] = np.nan
    row: dict[str, Any] = {
        schema.PATH: f"images/{split}/{name}",
        schema.PATIENT_ID: index,
        schema.FRONTAL_LATERAL: schema.FRONTAL,
        schema.NO_FINDING: 1.0 if case.lesion is None else 0.0,
        **ehr,
    }
    row[schema.MASK] = "" if case.lesion is None else f"masks/{name}"
    row[schema.LESION] = case.lesion or ""
    return row


def _write_split(rows: list[dict[str, Any]], path: Path) -> None:
    columns = _csv_columns()
    table = pd.DataFrame(rows, columns=columns)
    for column in (schema.SYSTOLIC, schema.DIASTOLIC):
        table[column] = table[column].round().astype("Int64")
    table.to_csv(path, index=False)


def _csv_columns() -> list[str]:
    return [*schema.CSV_COLUMNS, *_optional_columns(), schema.MASK, schema.LESION]


def _split_paths(root: Path) -> dict[str, Path]:
    return {split: root / f"{split}.csv" for split in SPLITS}


def generate_phantom_dataset(
    root: str | os.PathLike,
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 400,
    image_size: int = 64,
    anomaly_fraction: float = 0.5,
    missing_fraction: float = 0.05,
    lesion_types: Sequence[str] = LESION_TYPES,
    seed: int = 0,
) -> dict[str, Path]:
    """Generate a phantom dataset at ``root`` (which must not exist, or be empty) and return the CSV of each split.

    Everything is written into a temporary sibling folder that is renamed to ``root`` at the end, so an interrupted
    run never leaves a half dataset that a later run would mistake for a complete one.

    Args:
        root: dataset folder to create.
        num_train: normal training images (``train.csv`` has normals only).
        num_val: validation images, ``anomaly_fraction`` of them abnormal.
        num_test: test images, ``anomaly_fraction`` of them abnormal.
        image_size: square film size in pixels (at least 32).
        anomaly_fraction: share of abnormal images in validation and test.
        missing_fraction: probability that each MIMIC EHR value (any field outside the demographics) of an image is
            left empty in the CSV.
        lesion_types: lesions dealt out to abnormal images in equal shares, from ``LESION_TYPES``.
        seed: dataset seed; image ``i`` depends only on ``(seed, i)`` and its lesion.

    Raises:
        ValueError: a parameter is out of range.
        FileExistsError: ``root`` exists and is not empty.
    """
    parameters = _parameters(
        num_train, num_val, num_test, image_size, anomaly_fraction, missing_fraction, lesion_types, seed
    )
    return _generate(Path(root), parameters)


def _is_empty_or_absent(root: Path) -> bool:
    return not root.exists() or (root.is_dir() and not any(root.iterdir()))


def _generate(root: Path, parameters: dict[str, Any]) -> dict[str, Path]:
    """Write the dataset into a hidden sibling folder and rename it onto ``root``; remove the folder on failure.

    A killed process can leave only that ``.<root>.partial-*`` folder behind, never a partial ``root``. Losing a
    race to another process that published ``root`` first raises ``FileExistsError``.
    """
    if not _is_empty_or_absent(root):
        raise FileExistsError(f"cannot generate phantoms into {root}: it exists and is not an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        _write_dataset(staging, parameters)
        try:
            os.replace(staging, root)
        except OSError as error:
            raise FileExistsError(f"cannot move the generated phantoms onto {root}: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return _split_paths(root)


def _write_dataset(folder: Path, parameters: dict[str, Any]) -> None:
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True)
    (folder / "masks").mkdir()
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for split, index, lesion in _lesion_plan(parameters):
        case = render_case(parameters["seed"], index, parameters["image_size"], lesion)
        Image.fromarray(np.round(case.image * 255.0).astype(np.uint8)).save(
            folder / "images" / split / f"{index:06d}.png"
        )
        if case.mask is not None:
            Image.fromarray(case.mask.astype(np.uint8) * 255).save(folder / "masks" / f"{index:06d}.png")
        missing_rng = np.random.default_rng([parameters["seed"], index, _MISSING_STREAM])
        missing = missing_rng.random(len(_optional_columns())) < parameters["missing_fraction"]
        rows[split].append(_csv_row(case, split, index, parameters["seed"], missing))
    for split, path in _split_paths(folder).items():
        _write_split(rows[split], path)
    counts = {
        split: {"images": len(split_rows), "abnormal": sum(row[schema.LESION] != "" for row in split_rows)}
        for split, split_rows in rows.items()
    }
    with open(folder / PARAMETERS_FILE, "w", encoding="utf-8") as handle:
        json.dump({"generator": GENERATOR, "parameters": parameters, "counts": counts}, handle, indent=2)


def ensure_phantom_dataset(
    root: str | os.PathLike,
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 400,
    image_size: int = 64,
    anomaly_fraction: float = 0.5,
    missing_fraction: float = 0.05,
    lesion_types: Sequence[str] = LESION_TYPES,
    seed: int = 0,
) -> dict[str, Path]:
    """Return the phantom CSVs at ``root``, generating the dataset first if ``root`` does not exist or is empty.

    This is what the bundle calls on first use: a second call, or a concurrent one from another process (e.g. a DDP
    rank), reuses the dataset as long as it was made with the same parameters.

    Raises:
        ValueError: ``root`` holds a phantom dataset made with different parameters (both are named), or ``root``
            exists but is not a phantom dataset.
        FileNotFoundError: ``root`` holds ``phantoms.json`` but a split CSV is missing.
    """
    requested = _parameters(
        num_train, num_val, num_test, image_size, anomaly_fraction, missing_fraction, lesion_types, seed
    )
    root = Path(root)
    if _is_empty_or_absent(root):
        try:
            return _generate(root, requested)
        except FileExistsError:
            if not (root / PARAMETERS_FILE).is_file():
                raise
    parameters_file = root / PARAMETERS_FILE
    if not parameters_file.is_file():
        raise ValueError(f"{root} exists but is not a phantom dataset: {parameters_file} is missing")
    try:
        existing = json.loads(parameters_file.read_text(encoding="utf-8"))["parameters"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{parameters_file} is not a phantom parameter file: {error}") from error
    if existing != requested:
        differences = ", ".join(
            f"{key}: existing {existing.get(key)!r} vs requested {requested.get(key)!r}"
            for key in sorted(set(existing) | set(requested))
            if existing.get(key) != requested.get(key)
        )
        raise ValueError(
            f"phantom dataset at {root} was generated with different parameters ({differences}); "
            f"delete it or choose another folder. Existing: {existing}. Requested: {requested}."
        )
    paths = _split_paths(root)
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"phantom dataset at {root} is incomplete: {path} is missing")
        absent = [column for column in _csv_columns() if column not in pd.read_csv(path, nrows=0).columns]
        if absent:
            raise ValueError(
                f"phantom dataset at {root} has no column(s) {absent} in {path.name}: it was generated before these "
                f"fields joined the EHR field table (schema.EHR_FIELDS); delete it or choose another folder"
            )
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line: ``python -m monai_diff3m.data.phantoms --output DIR [...]``; prints each split's CSV and counts.

    An existing dataset with the same parameters is reused, so the command is safe to repeat.
    """
    parser = argparse.ArgumentParser(
        prog="python -m monai_diff3m.data.phantoms",
        description="Generate synthetic chest X-ray phantoms with EHR in CheXpert layout.",
    )
    parser.add_argument("--output", required=True, type=Path, help="dataset folder to create")
    parser.add_argument("--num-train", type=int, default=2000, help="normal training images")
    parser.add_argument("--num-val", type=int, default=200, help="validation images")
    parser.add_argument("--num-test", type=int, default=400, help="test images")
    parser.add_argument("--image-size", type=int, default=64, help="film height and width in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--anomaly-fraction", type=float, default=0.5, help="abnormal share of valid/test")
    parser.add_argument("--missing-fraction", type=float, default=0.05, help="probability of a missing EHR value")
    parser.add_argument(
        "--lesion-types",
        nargs="+",
        default=list(LESION_TYPES),
        choices=LESION_TYPES,
        help="lesions dealt out to abnormal images",
    )
    args = parser.parse_args(argv)
    try:
        paths = ensure_phantom_dataset(
            args.output,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            image_size=args.image_size,
            anomaly_fraction=args.anomaly_fraction,
            missing_fraction=args.missing_fraction,
            lesion_types=args.lesion_types,
            seed=args.seed,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        parser.error(str(error))
    for split, path in paths.items():
        table = pd.read_csv(path, usecols=[schema.NO_FINDING])
        abnormal = int((table[schema.NO_FINDING] == 0.0).sum())
        print(f"{split}: {path} ({len(table)} images, {abnormal} abnormal)")
    return paths


if __name__ == "__main__":
    main()
