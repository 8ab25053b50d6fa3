"""A progress bar with rate and time left for training epochs and scoring runs, shown only to a person watching."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine
from ignite.handlers import ProgressBar

#: Ignite's default bar plus the rate: ``Epoch [3/12]: [10/25]  40%|████ , loss=0.04 [00:04<00:06,  2.41batch/s]``.
BAR_FORMAT = "{desc}[{n_fmt}/{total_fmt}] {percentage:3.0f}%|{bar}{postfix} [{elapsed}<{remaining}, {rate_fmt}]"


class TerminalProgressBar:
    """Attach Ignite's ``ProgressBar`` (on stdout, cleared when done) when ``enabled`` and on the first process.

    Logs, CI output and other DDP ranks stay free of bar redraws: the bundles enable it only when stdout is a
    terminal (``progress_bar`` key), and then turn the per-iteration log lines off, which would break the bar.

    Args:
        enabled: attach the bar; off, ``attach`` does nothing.
        description: text before the counts; Ignite's default is ``Epoch [e/E]`` or ``Iteration``.
        output_transform: engine output -> value or dict shown after the bar, e.g. the training loss.
    """

    def __init__(
        self,
        enabled: bool = True,
        description: str | None = None,
        output_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.description = description
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        if not self.enabled or idist.get_rank() > 0:
            return
        description = {} if self.description is None else {"desc": self.description}
        bar = ProgressBar(persist=False, bar_format=BAR_FORMAT, file=sys.stdout, unit="batch", **description)
        bar.attach(engine, output_transform=self.output_transform)
