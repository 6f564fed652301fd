"""PNG plots of a search run (matplotlib, Agg backend; the only module that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_distribution(layer_names: Sequence[str], candidates: Sequence[Sequence[str]],
                      probs: Sequence[Sequence[float]], path: str | Path, title: str = "") -> None:
    """Heatmap: one row per searchable layer, one column per candidate name, cell = probability
    (blank where the layer does not offer the candidate); the argmax of each row is boxed."""
    import numpy as np

    plt = _pyplot()
    names: list[str] = []
    for cands in candidates:
        names.extend(c for c in cands if c not in names)
    grid = np.full((len(layer_names), len(names)), np.nan)
    for row, (cands, p) in enumerate(zip(candidates, probs)):
        for c, v in zip(cands, p):
            grid[row, names.index(c)] = v
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 1.2 + 0.32 * len(layer_names)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for row in range(len(layer_names)):
        col = int(np.nanargmax(grid[row]))
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(layer_names)), layer_names)
    ax.set_xlabel("candidate")
    ax.set_title(title or "architecture distribution (argmax boxed)")
    fig.colorbar(image, ax=ax, label="probability")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(log: Sequence[dict], budget_ms: float | None, path: str | Path) -> None:
    """Expected latency and the argmax architecture's latency per epoch, against the budget."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in log]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(epochs, [r["expected_latency_ms"] for r in log], marker="o", label="expected latency (learned distribution)")
    ax.plot(epochs, [r["argmax_latency_ms"] for r in log], marker="s", linestyle="--", label="argmax architecture")
    if budget_ms is not None:
        ax.axhline(budget_ms, color="red", linestyle=":", label=f"budget {budget_ms:.3g} ms")
    ax.set_xlabel("epoch")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("latency over the search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
