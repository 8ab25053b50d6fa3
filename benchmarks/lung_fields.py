"""How often the shipped lung-field network finds both lungs on a dataset, and overlay montages to check it by eye.

    python benchmarks/lung_fields.py --dataset-csv ../shared/data/nih_cxr14_dev64/labels.csv --montage-dir lung_montages

"Found" means :func:`monai_diff3m.networks.lung_field_rules.plausible_lung_fields` accepts the mask: two regions, one
per side, of lung-like size, position, height and symmetry. That check cannot tell a lung from a lung-shaped
mistake, so the montages (64 films per page, red = plausible mask, blue = rejected mask) are for looking at every film.
The old threshold rule (``lung_field_mask``) is reported beside it for comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.networks.lung_field_rules import lung_field_mask, plausible_lung_fields
from monai_diff3m.networks.lung_fields import LungFieldSegmenter, normalise_for_lung_fields
from monai_diff3m.transforms.image import read_chest_xray

TILES_PER_ROW = 8
TILES_PER_PAGE = 64


def montage_pages(films: np.ndarray, masks: np.ndarray, found: np.ndarray, folder: Path, scale: int = 2) -> list[Path]:
    """Write overlay pages of 64 films (8 x 8): the mask in red where plausible, in blue where rejected."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = []
    for start in range(0, len(films), TILES_PER_PAGE):
        tiles = []
        for film, mask, ok in zip(
            films[start : start + TILES_PER_PAGE],
            masks[start : start + TILES_PER_PAGE],
            found[start : start + TILES_PER_PAGE],
        ):
            rgb = np.repeat(film[..., None], 3, axis=-1)
            rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array([1.0, 0.0, 0.0] if ok else [0.0, 0.0, 1.0])
            tiles.append(rgb)
        while len(tiles) % TILES_PER_ROW:
            tiles.append(np.ones_like(tiles[0]))
        rows = [np.concatenate(tiles[i : i + TILES_PER_ROW], axis=1) for i in range(0, len(tiles), TILES_PER_ROW)]
        page = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
        path = folder / f"lung_fields_{start // TILES_PER_PAGE + 1:02d}.png"
        Image.fromarray(page).resize((page.shape[1] * scale, page.shape[0] * scale), Image.Resampling.NEAREST).save(
            path
        )
        pages.append(path)
    return pages


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-csv", required=True)
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--montage-dir", default=None, help="write overlay pages here")
    args = parser.parse_args()
    table = pd.read_csv(args.dataset_csv, dtype={schema.PATH: str})
    root = Path(args.image_root) if args.image_root else Path(args.dataset_csv).parent
    films = torch.stack(
        [normalise_for_lung_fields(read_chest_xray(root / path).as_tensor()[None])[0] for path in table[schema.PATH]]
    )
    masks = torch.cat([LungFieldSegmenter()(batch) for batch in films.split(128)])[:, 0].numpy()
    found = np.array([plausible_lung_fields(mask) for mask in masks])
    rule_found = np.array([plausible_lung_fields(lung_field_mask(film[0].numpy())) for film in films])
    normal = table[schema.NO_FINDING].map(schema.anomaly_label).to_numpy() == 0
    report = {
        "films": int(len(table)),
        "network_both_lungs": float(found.mean()),
        "network_both_lungs_normal": float(found[normal].mean()),
        "network_both_lungs_abnormal": float(found[~normal].mean()),
        "rule_both_lungs": float(rule_found.mean()),
        "not_found": table[schema.PATH][~found].tolist(),
    }
    print(json.dumps({key: value for key, value in report.items() if key != "not_found"}, indent=2))
    if args.montage_dir:
        pages = montage_pages(films[:, 0].numpy(), masks, found, Path(args.montage_dir))
        print(f"{len(pages)} montage pages in {args.montage_dir}")
    return report


if __name__ == "__main__":
    main()
