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


def plot_pareto(trials: Sequence, front: Sequence, objectives: Sequence[str], budgets, path: str | Path) -> None:
    """Top-1 against predicted latency (and against peak activation memory when it is an
    objective): every evaluated trial, the front joined by a line, the budgets as dotted lines."""
    plt = _pyplot()
    axes_spec = [("predicted_ms", "predicted latency (ms)", budgets.latency_ms)]
    if "memory" in objectives:
        axes_spec.append(("peak_activation_bytes", "peak activation memory (bytes)", budgets.memory_bytes))
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.4 * len(axes_spec), 4.2), squeeze=False)
    scored = [t for t in trials if t.state == "complete" and t.top1 is not None]
    for ax, (attr, label, budget) in zip(axes[0], axes_spec):
        ax.scatter([getattr(t, attr) for t in scored], [t.top1 for t in scored], s=14, alpha=0.4, label="trials")
        ordered = sorted(front, key=lambda t: getattr(t, attr))
        ax.plot([getattr(t, attr) for t in ordered], [t.top1 for t in ordered], "o-", color="tab:orange",
                label="Pareto front")
        if front:
            best = max(front, key=lambda t: t.top1)
            ax.scatter([getattr(best, attr)], [best.top1], s=90, marker="*", color="tab:green", zorder=3,
                       label="chosen (most accurate within budgets)")
        if budget is not None:
            ax.axvline(budget, color="red", linestyle=":", label=f"budget {budget:.4g}")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("search trials and Pareto front")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_edge_probabilities(log: Sequence[dict], edge_names: Sequence[str], candidates: Sequence[Sequence[str]],
                            path: str | Path, title: str = "") -> None:
    """One panel per edge: each candidate op's softmax(alpha) after every epoch (a DARTS search).
    More than 12 edges (the darts cell space's 28): one heat map of the last epoch's softmax(alpha),
    an edge per row, an op per column (many small line panels are unreadable and slow to draw)."""
    plt = _pyplot()
    if len(edge_names) > 12:
        last = log[-1]["probs"]
        ops = list(candidates[0])
        width = max(len(c) for c in candidates)
        grid = [list(p) + [float("nan")] * (width - len(p)) for p in last]
        fig, ax = plt.subplots(figsize=(1.0 * width + 3, 0.28 * len(edge_names) + 1.8))
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(edge_names)), [str(n) for n in edge_names], fontsize=7)
        ax.set_xticks(range(len(ops)), ops, rotation=40, ha="right", fontsize=8)
        fig.colorbar(image, ax=ax, label="softmax(alpha)")
        ax.set_title((title or "architecture weights per edge") + f" (epoch {log[-1]['epoch']})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    epochs = [r["epoch"] for r in log]
    cols = min(3, len(edge_names))
    rows = -(-len(edge_names) // cols)
    top = min(1.0, max(max(max(p) for p in r["probs"]) for r in log) + 0.05)  # a short search stays near uniform
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, sharex=True, sharey=True)
    for k, (name, cands) in enumerate(zip(edge_names, candidates)):
        ax = axes[k // cols][k % cols]
        for c, op in enumerate(cands):
            ax.plot(epochs, [r["probs"][k][c] for r in log], marker="o", markersize=3, label=op)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0.0, top)
        ax.grid(alpha=0.3)
    for k in range(len(edge_names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("softmax(alpha)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(title or "architecture weights per edge over the search")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
