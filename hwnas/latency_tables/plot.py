"""Predicted-vs-measured scatter plot of a validation report (PNG)."""

from __future__ import annotations

import io
import os

from ..jsonio import atomic_write_bytes


def scatter_png(report: dict, path: str | os.PathLike, title: str = "") -> None:
    """Raw and calibrated predictions against measured latency, with the +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["archs"]
    measured = [r["measured_ms"] for r in rows]
    lo, hi = min(measured) * 0.8, max(measured) * 1.2
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    ax.scatter(measured, [r["raw_sum_ms"] for r in rows], s=14, marker="x", color="tab:orange", label="raw LUT sum")
    ax.scatter(measured, [r["calibrated_ms"] for r in rows], s=14, color="tab:blue", label="calibrated")
    s = report["summary"]
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title(title or f"MAPE raw {s['raw']['mape_pct']:.1f}%  calibrated {s['calibrated']['mape_pct']:.1f}%  "
                 f"noise {s['noise_cv_median'] * 100:.1f}%", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
