"""Figures: training curves, metric comparison and cold start, each as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bivrec.atomic import atomic_path  # noqa: E402


def run_colours(n: int) -> list:
    """Distinct colours for up to 20 runs (matplotlib's default cycle repeats after 10)."""
    return [plt.get_cmap("tab20")(i % 20) for i in range(n)]


def legend_outside(ax) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def save(fig, out_stem: Path) -> None:
    for ext in ("png", "pdf"):
        with atomic_path(out_stem.with_suffix(f".{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    plt.close(fig)


def training_curves(histories: dict[str, dict[str, pd.DataFrame]], metric: str, out_stem: Path) -> None:
    """Validation ``metric`` against training step; one panel per dataset, one line per run."""
    datasets = list(histories)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        runs = histories[dataset]
        for colour, (run, history) in zip(run_colours(len(runs)), runs.items()):
            column = f"valid_{metric}"
            if column in history and len(history) > 1:
                ax.plot(history["step"], history[column], marker=".", color=colour, label=run)
            elif column in history:
                ax.axhline(history[column].iloc[0], linestyle="--", color="grey", label=f"{run} (no training)")
        ax.set_title(dataset)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        legend_outside(ax)
    save(fig, out_stem)


def grouped_bars(values: dict[str, pd.DataFrame], ylabel: str, out_stem: Path) -> None:
    """One panel per key of ``values``; each panel's DataFrame has runs as rows, groups as columns."""
    fig, axes = plt.subplots(1, len(values), figsize=(7.5 * len(values), 3.8), squeeze=False)
    for ax, (title, frame) in zip(axes[0], values.items()):
        width = 0.8 / max(len(frame.index), 1)
        x = np.arange(len(frame.columns))
        for i, (colour, run) in enumerate(zip(run_colours(len(frame.index)), frame.index)):
            offset = (i - (len(frame.index) - 1) / 2) * width
            ax.bar(x + offset, frame.loc[run].to_numpy(float), width, color=colour, label=run)
        ax.set_xticks(x, frame.columns, rotation=20)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        legend_outside(ax)
    save(fig, out_stem)
