"""Plots and tables as markdown, for Dagster metadata and reports (matplotlib Agg, no display needed)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def png_markdown(fig: Figure, alt: str) -> str:
    """The figure as a base64 PNG inside markdown (`![alt](data:image/png;base64,...)`); closes it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def table_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """The frame as a GitHub markdown table (index included when it is named or not a plain range)."""
    plain_index = df.index.name is None and df.index.equals(pd.RangeIndex(len(df)))
    return df.to_markdown(index=not plain_index, floatfmt=floatfmt)
