"""The report stage: every table and figure of the paper's results from the metrics files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bivrec.atomic import write_text
from bivrec.data.dataset import DataError
from bivrec.report import figures
from bivrec.report.tables import rank_marks, significance_marks, write_table


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: file not found (run the stage that writes it first)")
    return json.loads(path.read_text())


def main_table(params: dict, metrics_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Rows = runs, columns = dataset x metric (means over training seeds); plus rank marks,
    significance marks, the standard deviation over seeds of every cell and the largest seed count."""
    columns, spread, dataset_of, per_user, most_seeds = {}, {}, {}, {}, 1
    for dataset in params["datasets"]:
        for metric in params["report"]["table_metrics"]:
            column = f"{dataset} {metric}" if len(params["datasets"]) > 1 else metric
            dataset_of[column] = (dataset, metric)
            columns[column], spread[column] = {}, {}
        for run in params["runs"]:
            summary = _read_json(metrics_root / dataset / f"{run}.json")
            most_seeds = max(most_seeds, len(summary.get("seeds", {})))
            for metric in params["report"]["table_metrics"]:
                if metric not in summary["metrics"]:
                    raise DataError(f"{metrics_root / dataset / f'{run}.json'}: no metric {metric!r} (check eval.topk)")
                column = f"{dataset} {metric}" if len(params["datasets"]) > 1 else metric
                columns[column][run] = summary["metrics"][metric]
                spread[column][run] = summary.get("metrics_std", {}).get(metric, 0.0)
            per_user[(run, dataset)] = pd.read_parquet(metrics_root / dataset / f"{run}.per_user.parquet")
    table, spread = (pd.DataFrame(c).reindex(params["runs"]).rename_axis("model") for c in (columns, spread))
    sig = significance_marks(per_user, table, params["report"]["proposed_run"], dataset_of)
    return table, rank_marks(table), sig, spread, most_seeds


DATASET_COLUMNS = {"users": int, "items": int, "interactions": int, "avg_length": float, "density": float}


def dataset_table(params: dict, data_root: Path) -> pd.DataFrame:
    """The paper-style dataset table: users, items, interactions, average length, density."""
    rows = {}
    for dataset in params["datasets"]:
        stats = _read_json(data_root / dataset / "stats.json")
        rows[dataset] = {column: cast(stats[column]) for column, cast in DATASET_COLUMNS.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").astype(DATASET_COLUMNS)
    table.index.name = "dataset"
    return table


def _group_label(group: str, entry: dict) -> str:
    among = f", {entry['candidates']} candidate items" if "candidates" in entry else ""
    return f"{group} ({entry['users']} users{among})"


def cold_start_table(params: dict, experiments_root: Path, metric: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    frames, per_dataset = {}, {}
    for dataset in params["datasets"]:
        results = _read_json(experiments_root / dataset / "cold_start.json")["runs"]
        frame = pd.DataFrame({run: {group: m.get(metric, float("nan")) for group, m in groups.items()} for run, groups in results.items()}).T
        frame = frame.reindex(params["runs"])
        users = next(iter(results.values()))  # every run sees the same groups of test users
        frame.columns = [_group_label(group, users[group]) for group in frame.columns]
        per_dataset[dataset] = frame
        frames.update({f"{dataset} {group}" if len(params["datasets"]) > 1 else group: frame[group] for group in frame.columns})
    table = pd.DataFrame(frames)
    table.index.name = "model"
    return table, per_dataset


def describe_encoder(dataset: str, modality: str, sidecar: dict) -> str:
    """One plain sentence about where a dataset's features came from and how many items lack them."""
    encoder = sidecar.get("encoder", {})
    name = " ".join(str(encoder[k]) for k in ("family", "arch", "model") if encoder.get(k))
    if encoder.get("family") == "precomputed":
        origin = f"shipped with the dataset ({encoder.get('source')})"
    elif encoder.get("pretrained"):
        origin = f"{name}, pretrained weights"
    else:
        origin = f"{name}, **random initialisation: NOT a pretrained encoder**"
    masked, n_items = sidecar.get("masked", {}).get("total", 0), sidecar.get("n_items", 0)
    coverage = f"{masked:,} of {n_items:,} items have no {modality} (masked)" if masked else f"all {n_items:,} items covered"
    return f"- {dataset} {modality}: {origin}; {sidecar.get('dim')}-d; {coverage}."


def encoder_notes(params: dict, features_root: Path) -> list[str]:
    notes = []
    for dataset in params["datasets"]:
        for modality in ("image", "text"):
            sidecar = features_root / dataset / modality / "features.json"
            if sidecar.exists():
                notes.append(describe_encoder(dataset, modality, json.loads(sidecar.read_text())))
    return notes


def build_report(params: dict, metrics_root: Path, experiments_root: Path, models_root: Path, data_root: Path, features_root: Path, out_root: Path) -> None:
    select_metric = params["eval"]["select_metric"]
    table, ranks, sig, spread, seeds = main_table(params, metrics_root)
    proposed = params["report"]["proposed_run"]
    over_seeds = ""
    if seeds > 1:
        write_table(spread, out_root / "tables" / "main_std", f"Standard deviation over {seeds} training seeds")
        over_seeds = f" Means over {seeds} training seeds (per-user values averaged for the test); std in `tables/main_std`."
    write_table(
        table, out_root / "tables" / "main", "Test metrics (full ranking over all items)", ranks, sig,
        note=f"Best in bold, second underlined; * = {proposed} beats the best other model "
        "(two-sided Wilcoxon signed-rank over test users, p < 0.05)." + over_seeds,
    )
    write_table(dataset_table(params, data_root), out_root / "tables" / "datasets", "Dataset statistics")
    cold, cold_per_dataset = cold_start_table(params, experiments_root, select_metric)
    write_table(cold, out_root / "tables" / "cold_start", f"Cold start ({select_metric})", rank_marks(cold))

    histories = {
        dataset: {run: pd.read_csv(models_root / dataset / run / "history.csv") for run in params["runs"]}
        for dataset in params["datasets"]
    }
    figures.training_curves(histories, select_metric, out_root / "figures" / "training_curves")
    comparison = {
        dataset: table[[c for c in table.columns if c.startswith(f"{dataset} ") or len(params["datasets"]) == 1]]
        for dataset in params["datasets"]
    }
    figures.grouped_bars(comparison, "test metric", out_root / "figures" / "metric_comparison")
    figures.grouped_bars(cold_per_dataset, f"test {select_metric}", out_root / "figures" / "cold_start")

    summary = [
        "# bivrec results",
        "",
        "Tables: `tables/main`, `tables/datasets`, `tables/cold_start` (.csv/.md/.tex). "
        "Figures: `figures/training_curves`, `figures/metric_comparison`, `figures/cold_start` (.png/.pdf).",
        "",
        "## Feature encoders",
        *encoder_notes(params, features_root),
        "",
        "## Main table",
        (out_root / "tables" / "main.md").read_text(),
    ]
    write_text(out_root / "report.md", "\n".join(summary))
