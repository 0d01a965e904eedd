"""Plots and tables as markdown, for Dagster metadata and reports (matplotlib Agg, no display needed)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

# The Dagster UI shows metadata in a modal about 800 px wide: wider images are cut off there.
MAX_WIDTH_PX = 760


def png_markdown(fig: Figure, alt: str, max_width_px: int = MAX_WIDTH_PX) -> str:
    """The figure as a base64 PNG inside markdown (`![alt](data:image/png;base64,...)`), at most
    `max_width_px` wide (a wide figure is drawn at a lower resolution, never cropped); closes it."""
    buf = io.BytesIO()
    try:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        tight = fig.get_tightbbox(canvas.get_renderer())
        dpi = min(100.0, max_width_px / max(tight.width + 0.25, 1e-6))  # bbox_inches pads 0.1 in a side
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def draw_pr_curve(
    ax: Axes, y: np.ndarray, score: np.ndarray, label: str, point: tuple[float, float, str] | None = None
) -> None:
    """The precision-recall curve of `score` on `ax`, with an optional (recall, precision, label) point
    marked in red (the chosen threshold)."""
    precision, recall, _ = precision_recall_curve(y, score)
    ax.plot(recall, precision, label=label)
    if point is not None:
        ax.scatter([point[0]], [point[1]], color="red", zorder=3, label=point[2])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))


def table_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """The frame as a GitHub markdown table (index included when it is named or not a plain range)."""
    plain_index = df.index.name is None and df.index.equals(pd.RangeIndex(len(df)))
    return df.to_markdown(index=not plain_index, floatfmt=floatfmt)
