"""What a person reads after scoring: overlays with a legend and the offline HTML report."""

from monai_diff3m.reports.figures import MAP_COLORMAP, FilmPreview, map_overlay, overlay_with_legend, png_bytes, to_gray
from monai_diff3m.reports.html import write_html_report
