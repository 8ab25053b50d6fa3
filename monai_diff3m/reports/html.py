"""One self-contained HTML page per scoring run, for a clinician-researcher who does not read CSV files.

Every image is embedded (base64 PNG) and no script or style sheet is fetched, so the single file opens offline, can
be mailed, and shows the same thing in ten years. The page ranks the films by the one score the model stands behind,
shows each film's input, its normal-looking twin and the map over it on one shared colour scale, the EHR the model
was given, the inputs that could not be scored and, for a labelled evaluation, the curves, metrics with their
intervals and the subgroups.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from monai_diff3m import schema
from monai_diff3m.io import atomic_path
from monai_diff3m.reports.figures import MAP_COLORMAP, FilmPreview, map_overlay, png_bytes, to_gray

REPORT_FILE = "report.html"
#: What each image score measures, for the page's explanation of ``anomaly_score``.
SCORE_MEANINGS = {
    "mse": "mean squared difference between the film and its twin",
    "mse_normalized": "mean squared difference between the min-max scaled film and twin",
    "max": "largest pixel of the smoothed |film - twin| map",
    "max_normalized": "largest pixel of the smoothed difference of the min-max scaled film and twin",
    "p99_smoothed": "99th percentile of the smoothed |film - twin| map (its brightest 1 %)",
    "lung_mean": "mean of the smoothed |film - twin| map inside the lung fields",
    "lowpass_mse": "mean square of the smoothed film - twin difference: the smooth shift towards normal anatomy",
}
_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;
vertical-align:top;font-size:.9em}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img.film{width:160px;height:160px;image-rendering:auto;display:block}figure{margin:0}
figcaption{font-size:.75em;color:#555;text-align:center}.warning{background:#fff3cd;border:1px solid #e0b400;
padding:.6em 1em;margin:1em 0}.error{background:#fdecea;border-color:#d93025}.muted{color:#777}
.legend{display:inline-block;width:240px;height:14px;vertical-align:middle;border:1px solid #999}
.primary{font-weight:bold}
"""


#: Inline, nothing fetched: records on <body> how many images decoded, so a headless browser can check the page.
_RENDER_CHECK = (
    "window.addEventListener('load',function(){var images=Array.prototype.slice.call(document.images);"
    "document.body.setAttribute('data-images',images.length);"
    "var rendered=images.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;"
    "document.body.setAttribute('data-images-rendered',rendered);"
    "document.body.setAttribute('data-film-rows',document.querySelectorAll('#films tbody tr').length);});"
)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, css: str = "film") -> str:
    return f'<img class="{css}" src="{_data_uri(png)}" alt="{html.escape(alt)}">'


def _number(value: Any, digits: int = 3, notation: str = "f") -> str:
    """``digits`` decimals, or significant figures with ``notation="g"`` (``lowpass_mse`` is about 1e-5, which
    fixed decimals print as 0); a dash for a missing value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{float(value):.{digits}{notation}}"


def _interval(values: Sequence[float] | None) -> str:
    return "" if not values else f" [{_number(values[0])}, {_number(values[1])}]"


def _legend_gradient() -> str:
    stops = ", ".join(
        "#{:02x}{:02x}{:02x}".format(*(round(channel * 255) for channel in colormaps[MAP_COLORMAP](position)[:3]))
        for position in np.linspace(0.0, 1.0, 9)
    )
    return f'<span class="legend" style="background:linear-gradient(to right, {stops})"></span>'


def _ehr_used(row: Mapping[str, Any]) -> str:
    """The EHR values of the row, and which were missing (the model then used its learned 'missing' token)."""
    given, missing = [], []
    for column in schema.ehr_columns():
        if column not in row:
            continue
        value = row[column]
        if schema.is_missing(value):
            missing.append(column)
        else:
            given.append(f"{column} {value:g}" if isinstance(value, float) else f"{column} {value}")
    text = html.escape(", ".join(given) or "none")
    if missing:
        text += f'<br><span class="muted">missing: {html.escape(", ".join(missing))}</span>'
    return text


def _label(row: Mapping[str, Any]) -> str:
    if schema.NO_FINDING not in row:
        return ""
    value = row[schema.NO_FINDING]
    finding = "normal" if value == 1 or value == 1.0 else "abnormal"
    lesion = row.get(schema.LESION)
    return finding + ("" if schema.is_missing(lesion) or finding == "normal" else f" ({html.escape(str(lesion))})")


def _films_section(
    table: pd.DataFrame, previews: Sequence[FilmPreview], image_range: Sequence[float], map_max: float
) -> str:
    by_image = {preview.image: preview for preview in previews}
    ranked = table.sort_values("anomaly_score", ascending=False, kind="stable").reset_index(drop=True)
    has_percentile = "anomaly_percentile" in ranked.columns
    has_labels = schema.NO_FINDING in ranked.columns
    header = ["#", "film", "anomaly score"] + (["percentile of normals"] if has_percentile else [])
    header += (["label"] if has_labels else []) + ["EHR used", "input", "normal-looking twin", "map over input"]
    rows = []
    for rank, row in ranked.iterrows():
        record = row.to_dict()
        preview = by_image.get(str(record["image"]))
        cells = [
            f'<td class="num">{int(str(rank)) + 1}</td>',
            f"<td>{html.escape(os.path.basename(str(record['image'])))}</td>",
            f'<td class="num primary">{_number(record["anomaly_score"], 3, "g")}</td>',
        ]
        if has_percentile:
            cells.append(f'<td class="num">{_number(record["anomaly_percentile"], 1)}</td>')
        if has_labels:
            cells.append(f"<td>{_label(record)}</td>")
        cells.append(f"<td>{_ehr_used(record)}</td>")
        if preview is None:
            cells.append('<td colspan="3" class="muted">not shown (only the highest-scoring films are)</td>')
        else:
            film = to_gray(preview.film, image_range)
            cells += [
                f"<td>{_img(png_bytes(film), 'input')}</td>",
                f"<td>{_img(png_bytes(to_gray(preview.twin, image_range)), 'twin')}</td>",
                f"<td>{_img(png_bytes(map_overlay(film, preview.anomaly_map, map_max)), 'anomaly map')}</td>",
            ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    return f'<table id="films"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _failures_section(failures: Sequence[tuple[str, str]]) -> str:
    if not failures:
        return "<p>Every input was scored.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(path))}</td><td>{html.escape(str(reason))}</td></tr>" for path, reason in failures
    )
    return f'<table id="failures"><thead><tr><th>input</th><th>why it was not scored</th></tr></thead>{rows}</table>'


def _metrics_section(metrics: Mapping[str, Any], score: str, curves_png: bytes | None) -> str:
    parts = [
        f"<p>{metrics['n']} films, {metrics['n_abnormal']} abnormal; 95% bootstrap intervals over "
        f"{html.escape(str(metrics.get('bootstrap', {}).get('unit', 'images')))}.</p>"
    ]
    if curves_png is not None:
        parts.append(_img(curves_png, "ROC and precision-recall curves", css="curves"))
    rows = []
    for name, values in metrics["scores"].items():
        css = ' class="primary"' if name == score else ""
        rows.append(
            f"<tr{css}><td>{html.escape(name)}{' (anomaly_score)' if name == score else ''}</td>"
            f'<td class="num">{_number(values["auroc"])}{_interval(values.get("auroc_interval"))}</td>'
            f'<td class="num">{_number(values["auprc"])}{_interval(values.get("auprc_interval"))}</td>'
            f'<td class="num">{_number(values["best_f1"])}</td>'
            f'<td class="num">{_number(values["sensitivity_at_95_specificity"])}</td></tr>'
        )
    parts.append(
        '<table id="metrics"><thead><tr><th>score</th><th>AUROC [95% CI]</th><th>AUPRC [95% CI]</th>'
        "<th>best F1</th><th>sensitivity at 95% specificity</th></tr></thead>" + "".join(rows) + "</table>"
    )
    subgroup_rows = []
    for column, groups in metrics.get("subgroups", {}).items():
        for value, entry in groups.items():
            if "metrics" in entry:
                values = entry["metrics"][score]
                cells = "".join(f'<td class="num">{_number(values[metric])}</td>' for metric in ("auroc", "auprc"))
            else:
                cells = f'<td colspan="2" class="muted">{html.escape(entry.get("skipped", ""))}</td>'
            subgroup_rows.append(
                f"<tr><td>{html.escape(str(column))}</td><td>{html.escape(str(value))}</td>"
                f'<td class="num">{entry["n"]}</td><td class="num">{entry["n_abnormal"]}</td>{cells}</tr>'
            )
    if subgroup_rows:
        parts.append(
            f"<h3>Subgroups ({html.escape(score)})</h3>"
            '<table id="subgroups"><thead><tr><th>group</th><th>value</th><th>films</th><th>abnormal</th>'
            "<th>AUROC</th><th>AUPRC</th></tr></thead>" + "".join(subgroup_rows) + "</table>"
        )
    return "".join(parts)


def write_html_report(
    path: str | os.PathLike,
    table: pd.DataFrame,
    previews: Sequence[FilmPreview],
    failures: Sequence[tuple[str, str]],
    score: str,
    image_range: Sequence[float],
    map_max: float,
    warnings: Sequence[str] = (),
    metrics: Mapping[str, Any] | None = None,
    curves_png: bytes | None = None,
    title: str = "Diff3M anomaly scores",
) -> None:
    """Write the report atomically to ``path``.

    Args:
        path: the HTML file (its folder must exist).
        table: the scored rows (``scores.csv``): ``image``, ``anomaly_score``, optional ``anomaly_percentile``,
            labels and EHR columns.
        previews: the films to show with images (the others are listed without); any order.
        failures: ``(path, reason)`` of the inputs that were not scored.
        score: the image score behind ``anomaly_score``.
        image_range: intensity range of the preview images and twins.
        map_max: map value at full colour, the same on every film.
        warnings: sentences shown at the top (e.g. a model trained on synthetic phantoms).
        metrics: the evaluation's ``metrics.json`` content, for the curves, metric and subgroup tables.
        curves_png: the ROC/PR figure of the evaluation.
    """
    low, high = (float(bound) for bound in image_range)
    meaning = SCORE_MEANINGS.get(score, score)
    reference = (
        "<code>anomaly_percentile</code> is the percent of the reference normal films recorded with the model "
        "that score at most as high (50 = a typical normal film, 99 = higher than 99 % of them)."
        if "anomaly_percentile" in table.columns
        else "No reference normals are recorded with this model, so the score has no percentile: compare films "
        "within one run and model only, higher meaning less like the normal films the model learned."
    )
    banner = "".join(f'<div class="warning error">{html.escape(text)}</div>' for text in warnings)
    evaluation = f"<h2>Evaluation</h2>{_metrics_section(metrics, score, curves_png)}" if metrics is not None else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<script>{_RENDER_CHECK}</script>
<h1>{html.escape(title)}</h1>
<p class="muted">{len(table)} film(s) scored, {len(failures)} not scored. Research software, not a medical device.</p>
{banner}
<h2>How to read it</h2>
<p><b>anomaly score</b> (<code>anomaly_score</code> in scores.csv) is <code>{html.escape(score)}</code>: the
{html.escape(meaning)}, where the film's gray range spans {high - low:g} units ([{low:g}, {high:g}]). The twin is
what the model makes of the film as a normal film for this patient's EHR; the map is where they differ. {reference}
The other score columns of scores.csv are alternatives kept for comparison.</p>
<p>Map colours, the same on every film: {_legend_gradient()} from 0 (no colour) to {map_max:.3g} or more units of
|film - twin|.</p>
{evaluation}
<h2>Films, highest anomaly score first</h2>
{_films_section(table, previews, image_range, map_max)}
<h2>Inputs not scored</h2>
{_failures_section(failures)}
</body></html>
"""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page)
