"""PNG charts for asset metadata: an epoch's reward distribution and value per contributor over epochs.

Rendered with matplotlib's Agg backend (no display), kept as files under the home's reports/ folder, and embedded
in markdown metadata as a data URI so the Dagster UI shows them inline.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

CHART_DPI = 80
MAX_BARS = 20


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI, bbox_inches="tight")
    return buf.getvalue()


def _figure(width: float = 7.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, safe in threads

    return Figure(figsize=(width, height))


def reward_chart(epoch: int, paid: list[tuple[str, float]]) -> bytes:
    """Bar chart of the largest payouts of one epoch, in tokens."""
    fig = _figure()
    ax = fig.subplots()
    top = paid[:MAX_BARS]
    ax.bar([n for n, _ in top], [t for _, t in top], color="#4f43dd")
    ax.set_title(f"epoch {epoch}: tokens paid" + (f" (largest {MAX_BARS})" if len(paid) > MAX_BARS else ""))
    ax.set_ylabel("tokens")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    return _png(fig)


def value_chart(upto_epoch: int, history: dict[str, list[tuple[int, float]]]) -> bytes:
    """Line chart of each top contributor's data value per settled epoch."""
    fig = _figure()
    ax = fig.subplots()
    for name, points in sorted(history.items()):
        ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=name)
    ax.set_title(f"value per contributor, epochs up to {upto_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("data value")
    if history:
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def save_chart(folder: Path, name: str, png: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(png)
    return path


def markdown_image(title: str, png: bytes) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
