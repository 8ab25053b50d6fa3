"""Export a trained checkpoint as the bundle's shipped model: ``models/model.pt`` plus its EHR statistics and card.

A Model Zoo bundle ships ``models/model.pt`` and states where it came from and what it scores. This step copies the
averaged weights and the self-describing metadata of a ``*_best.pt`` checkpoint, renames the EHR statistics file
after the output, and writes the model card (the command that trained it, the data, its licence, the measured test
figures) both into the checkpoint's metadata and beside it as ``<output stem>_card.json``::

    python -m monai_diff3m.export_model --checkpoint dev64/models/diff3m_spatial_best.pt \\
        --card card.json --output bundles/diff3m/models/model.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_diff3m.checkpoints import read_checkpoint
from monai_diff3m.io import atomic_path, write_json_atomic

#: What a model card must say for the model to ship.
CARD_FIELDS = ("training_command", "training_data", "data_licence", "test_metrics")


def export_model(checkpoint: str | Path, card: Mapping[str, Any], output: str | Path) -> Path:
    """Write ``output`` (weights and metadata with ``card`` under ``"model_card"``), its statistics and card.

    Raises:
        ValueError: ``card`` lacks a field of ``CARD_FIELDS``, or the checkpoint was not written by the bundle.
    """
    missing = [name for name in CARD_FIELDS if name not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}; a shipped model must state each of {list(CARD_FIELDS)}")
    source = Path(checkpoint)
    content = read_checkpoint(source)
    metadata = dict(content.get("metadata", {}))
    if "network_args" not in metadata:
        raise ValueError(f"checkpoint {source} has no 'network_args' metadata; it was not written by the bundle")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    statistics = f"{output.stem}_ehr_statistics.json"
    shutil.copyfile(source.parent / metadata["ehr_statistics_file"], output.parent / statistics)
    metadata.update(ehr_statistics_file=statistics, model_card=dict(card))
    with atomic_path(output) as temporary:
        torch.save({"network": content["network"], "metadata": metadata}, temporary)
    write_json_atomic(dict(card), output.with_name(f"{output.stem}_card.json"))
    return output


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a *_best.pt written by train.json")
    parser.add_argument("--card", required=True, help=f"JSON model card with {', '.join(CARD_FIELDS)}")
    parser.add_argument("--output", default="bundles/diff3m/models/model.pt")
    args = parser.parse_args(argv)
    path = export_model(args.checkpoint, json.loads(Path(args.card).read_text(encoding="utf-8")), args.output)
    print(f"shipped model written: {path}")
    return path


if __name__ == "__main__":
    main()
