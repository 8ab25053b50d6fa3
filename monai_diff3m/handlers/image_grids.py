"""TensorBoard image grids of what the diffusion model sees and predicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE


class ImageGridHandler:
    """At the end of each evaluator epoch, write the first images of chosen output keys as TensorBoard grids.

    Images in ``image_range`` (the diffusion range) are mapped to [0, 1]; maps with ``rescale`` keys are min–max
    scaled per image so that faint anomaly maps stay visible.

    Args:
        summary_writer: shared ``SummaryWriter`` (the same one as ``TensorBoardStatsHandler``).
        output_keys: keys of ``engine.state.output`` to show, e.g. ``["image", "masked", "x0_estimate"]``.
        max_images: images per grid.
        tag_prefix: TensorBoard tag prefix.
        rescale_keys: keys shown min–max scaled per image (anomaly maps).
        image_range: intensity range of the images the network works in.
        output_transform: maps ``engine.state.output`` to the dict of images the keys name (Ignite's idiom); the
            output itself by default.
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        output_keys: Sequence[str] = ("image", "masked", "x0_estimate"),
        max_images: int = 8,
        tag_prefix: str = "val",
        rescale_keys: Sequence[str] = (),
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        output_transform: Callable[[Any], Any] = lambda output: output,
    ) -> None:
        self.writer = summary_writer
        self.output_keys = list(output_keys)
        self.max_images = max_images
        self.tag_prefix = tag_prefix
        self.rescale_keys = set(rescale_keys)
        self.image_range = tuple(float(bound) for bound in image_range)
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output: Any = self.output_transform(engine.state.output)
        if not isinstance(output, dict):
            return
        for key in self.output_keys:
            if key not in output:
                continue
            images = torch.as_tensor(output[key])[: self.max_images].detach().float().cpu()
            if key in self.rescale_keys:
                low = images.amin(dim=(1, 2, 3), keepdim=True)
                high = images.amax(dim=(1, 2, 3), keepdim=True)
                images = (images - low) / (high - low).clamp_min(1e-8)
            else:
                images = ((images - self.image_range[0]) / (self.image_range[1] - self.image_range[0])).clamp(0.0, 1.0)
            self.writer.add_images(f"{self.tag_prefix}/{key}", images, global_step=engine.state.epoch)
        self.writer.flush()
