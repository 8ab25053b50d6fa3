"""Overlays of the anomaly map on the film, on one colour scale for every film, with a legend and a title.

A map scaled to its own maximum makes every film show equally hot spots, so a normal film looks as alarming as a
diseased one; here the colour of a pixel means the same difference to the normal-looking twin on every film
(``map_max``, in the model's intensity units, is full colour).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from monai.visualize import blend_images
from PIL import Image, ImageDraw, ImageFont

MAP_COLORMAP = "inferno"
#: The map is drawn over the film with this opacity at full colour (and proportionally less below it).
OPACITY = 0.6


@dataclass(order=True)
class FilmPreview:
    """What the report and TensorBoard show of one scored film, at the model's resolution; orders by score."""

    score: float
    order: int
    image: str = field(compare=False)
    film: np.ndarray = field(compare=False, repr=False)
    twin: np.ndarray = field(compare=False, repr=False)
    anomaly_map: np.ndarray = field(compare=False, repr=False)


def to_gray(image: np.ndarray, value_range: Sequence[float] | None = None) -> np.ndarray:
    """``image`` in [0, 1] for display: ``value_range`` mapped to [0, 1], or the film's own 1st-99th percentiles."""
    if value_range is None:
        low, high = (float(value) for value in np.percentile(image, (1, 99)))
    else:
        low, high = (float(value) for value in value_range)
    return np.clip((image - low) / max(high - low, 1e-8), 0.0, 1.0)


def map_overlay(gray: np.ndarray, anomaly_map: np.ndarray, map_max: float) -> np.ndarray:
    """RGB uint8: ``gray`` (in [0, 1]) blended with ``anomaly_map`` coloured on the shared scale [0, ``map_max``].

    MONAI's ``blend_images`` draws it, given the map already on the shared scale (``rescale_arrays=False``: its
    default rescales every map to its own maximum) and an opacity that grows with the map value, so that a quiet
    pixel keeps the film visible. The map goes in as float64 because ``blend_images`` returns the colours in the
    map's dtype: float32 colours would round a few pixels of a float32 map one gray level differently.
    """
    scaled = np.clip(anomaly_map / max(map_max, 1e-8), 0.0, 1.0)[None]
    blended = blend_images(
        gray[None],
        scaled.astype(np.float64),
        alpha=OPACITY * scaled,
        cmap=MAP_COLORMAP,
        rescale_arrays=False,
        transparent_background=False,
    )
    return (np.moveaxis(np.asarray(blended), 0, -1) * 255.0).round().astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def overlay_with_legend(overlay: np.ndarray, map_max: float, title: str, units: str) -> Image.Image:
    """The overlay at its own resolution under a title line, above a colour bar from 0 to ``map_max`` in ``units``.

    Text and bar scale with the film (a 2,500-pixel film gets 2,500-pixel-wide legible text).
    """
    height, width = overlay.shape[:2]
    text_size = max(10, width // 40)
    pad = text_size // 2
    bar_height = text_size
    top = text_size + 2 * pad
    bottom = bar_height + text_size + 3 * pad
    canvas = Image.new("RGB", (width, height + top + bottom), "white")
    canvas.paste(Image.fromarray(overlay), (0, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(text_size)
    draw.text((pad, pad), title, fill="black", font=font)
    bar_left, bar_right = pad, width - pad
    ramp = colormaps[MAP_COLORMAP](np.linspace(0.0, 1.0, max(bar_right - bar_left, 2)))[:, :3]
    bar = (np.repeat(ramp[None], bar_height, axis=0) * 255).round().astype(np.uint8)
    bar_top = top + height + pad
    canvas.paste(Image.fromarray(bar), (bar_left, bar_top))
    label_top = bar_top + bar_height + pad // 2
    draw.text((bar_left, label_top), "0", fill="black", font=font)
    right_label = f">= {map_max:.3g}"
    right_width = draw.textlength(right_label, font=font)
    draw.text((bar_right - right_width, label_top), right_label, fill="black", font=font)
    middle = f"|film - twin| ({units}), one scale for every film"
    middle_width = draw.textlength(middle, font=font)
    if middle_width < (bar_right - bar_left) - 2 * right_width:
        draw.text(((width - middle_width) / 2, label_top), middle, fill="black", font=font)
    return canvas


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """A PNG file's bytes (gray for 2D float arrays in [0, 1], RGB for uint8 (H, W, 3) arrays)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
