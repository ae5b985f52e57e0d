"""Figures, each as PNG and PDF: training curves, metric comparison, cold start, noise robustness,
sensitivity and learned interests. Every run keeps one colour across figures (``palette``); legends sit
outside the axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bivrec.atomic import atomic_path  # noqa: E402


def palette(names) -> dict:
    """The one colour of every run or row name in every figure: tab20 in the order given (the main
    runs first, then the experiments' own rows); built once per report and passed to each figure."""
    colours = {}
    for name in names:
        if name not in colours:
            colours[name] = plt.get_cmap("tab20")(len(colours) % 20)
    return colours


def legend_outside(ax, panels=None) -> None:
    """A legend right of ``ax``; with ``panels`` (a row of axes), one legend for the whole row holding
    every label of its panels once, so no legend sits between two panels over the next one's axis."""
    if panels is None:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return
    entries = {}
    for panel in panels:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    ax.legend(list(entries.values()), list(entries), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def save(fig, out_stem: Path) -> None:
    for ext in ("png", "pdf"):
        with atomic_path(out_stem.with_suffix(f".{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    plt.close(fig)


def not_run(out_stem: Path, reason: str) -> None:
    """A figure whose experiment was not run: it says so instead of being missing."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
    save(fig, out_stem)


def training_curves(histories: dict[str, dict[str, pd.DataFrame]], metric: str, out_stem: Path, colours: dict) -> None:
    """Validation ``metric`` against training step; one panel per dataset, one line per run."""
    datasets = list(histories)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        runs = histories[dataset]
        for run, history in runs.items():
            column = f"valid_{metric}"
            if column in history and len(history) > 1:
                ax.plot(history["step"], history[column], marker=".", color=colours[run], label=run)
            elif column in history:
                ax.axhline(history[column].iloc[0], linestyle="--", color="grey", label=f"{run} (no training)")
        ax.set_title(dataset)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    legend_outside(axes[0][-1], axes[0])
    save(fig, out_stem)


def grouped_bars(values: dict[str, pd.DataFrame], ylabel: str, out_stem: Path, colours: dict) -> None:
    """One panel per key of ``values``; each panel's DataFrame has runs as rows, groups as columns."""
    fig, axes = plt.subplots(1, len(values), figsize=(7.5 * len(values), 3.8), squeeze=False)
    for ax, (title, frame) in zip(axes[0], values.items()):
        width = 0.8 / max(len(frame.index), 1)
        x = np.arange(len(frame.columns))
        for i, run in enumerate(frame.index):
            offset = (i - (len(frame.index) - 1) / 2) * width
            ax.bar(x + offset, frame.loc[run].to_numpy(float), width, color=colours[run], label=run)
        ax.set_xticks(x, frame.columns, rotation=20)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    legend_outside(axes[0][-1], axes[0])
    save(fig, out_stem)


def noise_curves(results: dict[str, dict], metrics: list[str], out_stem: Path, colours: dict) -> None:
    """Test metrics against the share of history items replaced by random items; rows = datasets,
    columns = metrics, one line per run (``results``: dataset -> noise.json)."""
    fig, axes = plt.subplots(len(results), len(metrics), figsize=(4.2 * len(metrics), 3.3 * len(results)), squeeze=False)
    for row, (dataset, result) in zip(axes, results.items()):
        for ax, metric in zip(row, metrics):
            for run, by_share in result["runs"].items():
                shares = sorted(by_share, key=float)
                means = np.array([by_share[s]["metrics"][metric] for s in shares])
                stds = np.array([by_share[s]["metrics_std"][metric] for s in shares])
                x = np.array([float(s) for s in shares])
                ax.plot(x, means, marker="o", color=colours[run], label=run)
                if stds.any():
                    ax.fill_between(x, means - stds, means + stds, color=colours[run], alpha=0.15)
            ax.set_title(f"{dataset}: {metric}")
            ax.set_xlabel("share of history items replaced")
            ax.set_ylabel(f"test {metric}")
            ax.grid(alpha=0.3)
        legend_outside(row[-1])
    fig.tight_layout()
    save(fig, out_stem)


def value_label(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)


def sensitivity_lines(results: dict[str, dict], metrics: list[str], out_stem: Path, colours: dict) -> None:
    """One panel per varied parameter (rows = datasets): the test metrics at each value, the base run's
    own value (the centre) drawn as a larger hollow marker. The run's colour; one line style per metric."""
    n_columns = max(len(r["lines"]) for r in results.values())
    fig, axes = plt.subplots(len(results), n_columns, figsize=(3.6 * n_columns, 3.2 * len(results)), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for row, (dataset, result) in zip(axes, results.items()):
        colour = colours[result["base_run"]]
        for ax, (key, line) in zip(row, result["lines"].items()):
            numeric = all(isinstance(p["value"], (int, float)) and not isinstance(p["value"], bool) for p in line)
            x = [p["value"] for p in line] if numeric else list(range(len(line)))
            for style, metric in zip(styles, metrics):
                y = [p["metrics"][metric] for p in line]
                ax.plot(x, y, linestyle=style, marker="o", color=colour, label=f"{result['base_run']} {metric}")
                centre = [i for i, p in enumerate(line) if p["centre"]]
                ax.scatter([x[i] for i in centre], [y[i] for i in centre], s=110, facecolors="none", edgecolors="black", zorder=3)
            if not numeric:
                ax.set_xticks(x, [value_label(p["value"]) for p in line])
            ax.set_xlabel(key)
            ax.set_ylabel("test metric")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
        for ax in row[len(result["lines"]) :]:
            ax.axis("off")
        row[0].scatter([], [], s=110, facecolors="none", edgecolors="black", label="params.yaml value")
        handles, labels = row[0].get_legend_handles_labels()  # the same lines in every panel: one legend
        row[len(result["lines"]) - 1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    save(fig, out_stem)


def interest_maps(results: dict[str, dict], out_stem: Path) -> None:
    """Per dataset: for each shown test user, both views' allocation of the history items to interests
    (heat-maps side by side, oldest item left), then a PCA of the interest vectors of each view, one
    colour per interest index."""
    blocks = []
    for dataset, result in results.items():
        views = list(result["views"])
        n_users = len(result["views"][views[0]]["users"])
        blocks.append((dataset, result, views, n_users))
    n_rows = sum(n + 1 for *_, n in blocks)
    n_cols = max(len(views) for _, _, views, _ in blocks)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.8 * n_cols, 2.3 * n_rows), squeeze=False)
    interest_colours = plt.get_cmap("tab10")
    row = 0
    for dataset, result, views, n_users in blocks:
        for u in range(n_users):
            for col, view in enumerate(views):
                ax = axes[row][col]
                entry = result["views"][view]["users"][u]
                allocation = np.array(entry["allocation"], dtype=float)
                image = ax.imshow(allocation, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"{dataset}, user {entry['user']}: {view.upper()} view", fontsize=8)
                ax.set_xlabel("history item (oldest left)" if result["patch_size"] == 1 else f"patch of {result['patch_size']} items")
                ax.set_ylabel("interest")
                ax.set_yticks(range(allocation.shape[0]))
                fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="allocation")
            row += 1
        for col, view in enumerate(views):
            ax = axes[row][col]
            pca = result["views"][view]["pca"]
            interest = np.array(pca["interest"])
            for k in range(result["n_interests"]):
                pick = interest == k
                ax.scatter(np.array(pca["x"])[pick], np.array(pca["y"])[pick], s=5, alpha=0.6, color=interest_colours(k % 10), label=f"interest {k}")
            share = pca["explained_variance"]
            ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
            ax.set_ylabel(f"PC 2 ({share[1]:.0%})" if len(share) > 1 else "PC 2")
            ax.set_title(f"{dataset}: {view.upper()} interest vectors", fontsize=8)
            ax.grid(alpha=0.3)
        legend_outside(axes[row][len(views) - 1])
        row += 1
    for r in range(n_rows):
        for c in range(n_cols):
            if not axes[r][c].has_data() and not axes[r][c].images:
                axes[r][c].axis("off")
    fig.tight_layout()
    save(fig, out_stem)
