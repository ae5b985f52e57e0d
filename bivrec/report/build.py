"""The report stage: every table and figure of the paper's results from the metrics files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bivrec.atomic import write_text
from bivrec.data.dataset import DataError
from bivrec.evaluate import paired_significance
from bivrec.report import dvc_files, figures
from bivrec.report.tables import SIGNIFICANCE_LEVEL, rank_marks, significance_marks, write_table
from bivrec.tune import is_tuned


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: file not found (run the stage that writes it first)")
    return json.loads(path.read_text())


def table_column(params: dict, dataset: str, metric: str) -> str:
    """A main-table column: the metric, prefixed by the dataset when there are several."""
    return f"{dataset} {metric}" if len(params["datasets"]) > 1 else metric


def main_table(params: dict, metrics_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Rows = runs, columns = dataset x metric (means over training seeds); plus rank marks,
    significance marks, the standard deviation over seeds of every cell and the largest seed count."""
    columns, spread, dataset_of, per_user, most_seeds = {}, {}, {}, {}, 1
    for dataset in params["datasets"]:
        for metric in params["report"]["table_metrics"]:
            column = table_column(params, dataset, metric)
            dataset_of[column] = (dataset, metric)
            columns[column], spread[column] = {}, {}
        for run in params["runs"]:
            summary = _read_json(metrics_root / dataset / f"{run}.json")
            most_seeds = max(most_seeds, len(summary.get("seeds", {})))
            for metric in params["report"]["table_metrics"]:
                if metric not in summary["metrics"]:
                    raise DataError(f"{metrics_root / dataset / f'{run}.json'}: no metric {metric!r} (check eval.topk)")
                column = table_column(params, dataset, metric)
                columns[column][run] = summary["metrics"][metric]
                spread[column][run] = summary.get("metrics_std", {}).get(metric, 0.0)
            per_user[(run, dataset)] = pd.read_parquet(metrics_root / dataset / f"{run}.per_user.parquet")
    table, spread = (pd.DataFrame(c).reindex(params["runs"]).rename_axis("model") for c in (columns, spread))
    sig = significance_marks(per_user, table, params["report"]["proposed_run"], dataset_of)
    return table, rank_marks(table), sig, spread, most_seeds


def pooled_tables(params: dict, metrics_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pool (``report.pools``: datasets whose test users are disjoint, e.g. user folds): every run's
    mean over all pooled test users, and the proposed run against each other run paired over those
    users (difference, relative difference, two-sided Wilcoxon p-value)."""
    metrics, proposed = params["report"]["table_metrics"], params["report"]["proposed_run"]
    means, tests = {}, []
    pools = complete_pools(params)
    for pool, members in pools.items():
        values = {
            run: pd.concat([pd.read_parquet(metrics_root / dataset / f"{run}.per_user.parquet") for dataset in members], ignore_index=True)
            for run in params["runs"]
        }
        for metric in metrics:
            means[f"{pool} {metric}" if len(pools) > 1 else metric] = {run: float(v[metric].mean()) for run, v in values.items()}
        if proposed not in values:
            continue
        for other in (run for run in params["runs"] if run != proposed):
            for metric in metrics:
                a, b = values[proposed][metric].to_numpy(), values[other][metric].to_numpy()
                tests.append({"comparison": f"{pool}: {proposed} vs. {other}, {metric}", proposed: a.mean(), "other": b.mean(),
                              "difference": a.mean() - b.mean(), "relative %": 100 * (a.mean() - b.mean()) / b.mean() if b.mean() else float("nan"),
                              "p": f"{paired_significance(a, b):.2g}", "users": int(a.size), "datasets": len(members)})  # p: text, 2 significant digits
    table = pd.DataFrame(means).rename_axis("model")
    empty = pd.DataFrame(index=pd.Index([], name="comparison"))
    return table, pd.DataFrame(tests).set_index("comparison") if tests else empty


def complete_pools(params: dict) -> dict[str, list[str]]:
    """The pools of ``report.pools`` whose every member is among this run's datasets (the others are skipped)."""
    return {pool: members for pool, members in params["report"].get("pools", {}).items() if set(members) <= set(params["datasets"])}


def tune_table(params: dict, experiments_root: Path) -> pd.DataFrame:
    """Every grid point of every tuned run: its settings, best validation score and step; the winner marked."""
    rows = []
    for dataset in params["datasets"]:
        for run in params["runs"]:
            if not is_tuned(params, dataset, run):
                continue
            result = _read_json(experiments_root / dataset / "tune" / f"{run}.json")
            for point in result["points"]:
                rows.append({"point": f"{dataset} {run} p{point['point']}", **{k: str(v) for k, v in point["settings"].items()},
                             f"valid {result['metric']}": point["valid"], "best step": int(point["best_step"]),
                             "chosen": "yes" if point["point"] == result["winner"] else ""})
    return pd.DataFrame(rows).set_index("point") if rows else pd.DataFrame(index=pd.Index([], name="point"))


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


def _per_dataset(params: dict, frames: dict[str, pd.DataFrame], index_name: str) -> pd.DataFrame:
    """One table from per-dataset frames with the same rows: columns prefixed by the dataset when there are several."""
    several = len(frames) > 1
    parts = [frame.add_prefix(f"{dataset} ") if several else frame for dataset, frame in frames.items()]
    table = pd.concat(parts, axis=1) if parts else pd.DataFrame()
    table.index.name = index_name
    return table


def ablation_table(params: dict, experiments_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str], int]:
    """Rows = the full run and each ablation setting; columns = the report metrics (means over seeds)
    and the p-value of the select metric against the full run; plus the spread over seeds, '*' marks
    (p < 0.05 against the full run on that metric), one sentence per shuffled control, the seed count."""
    metrics = params["report"]["table_metrics"]
    select = params["eval"]["select_metric"]
    values, spreads, marks, notes, seeds = {}, {}, {}, [], 1
    for dataset in params["datasets"]:
        result = _read_json(experiments_root / dataset / "ablation.json")
        rows = result["rows"]
        frame = pd.DataFrame({name: {m: row["metrics"].get(m, float("nan")) for m in metrics} for name, row in rows.items()}).T
        spread = pd.DataFrame({name: {m: row["metrics_std"].get(m, 0.0) for m in metrics} for name, row in rows.items()}).T
        mark = pd.DataFrame({name: {m: "*" if row.get("p_value", {}).get(m, 1.0) < SIGNIFICANCE_LEVEL else "" for m in metrics} for name, row in rows.items()}).T
        frame[f"p ({select})"] = [row.get("p_value", {}).get(select, float("nan")) for row in rows.values()]
        frame["run"] = [f"main run {row['reused_run']}" if row["reused_run"] else "trained here" for row in rows.values()]
        mark[f"p ({select})"], mark["run"] = "", ""
        frame.index = [f"full ({result['base_run']})" if name == "full" else name for name in frame.index]
        spread.index = mark.index = frame.index
        values[dataset], spreads[dataset], marks[dataset] = frame, spread, mark
        seeds = max(seeds, *(row["seeds"] for row in rows.values()))
        for name, control in result["shuffled_controls"].items():
            if not control["loses_to_full"]:
                verdict = "does NOT lose to the full model: on this data the features' content shows no measurable benefit"
            elif control["p_value"] < SIGNIFICANCE_LEVEL:
                verdict = "loses to the full model, as it should: the model uses what the features say about each item"
            else:
                verdict = "loses to the full model, but not significantly: the benefit of the features' content is within the noise"
            notes.append(
                f"{dataset}: the shuffled-features control `{name}` ({control['metric']} {control['shuffled']:.4f} vs. "
                f"{control['full']:.4f}, p = {control['p_value']:.3g}) {verdict}."
            )
    return _per_dataset(params, values, "setting"), _per_dataset(params, spreads, "setting"), _per_dataset(params, marks, "setting"), notes, seeds


TRANSFER_ROWS = ("zero_shot", "fine_tuned", "scratch")


def transfer_table(params: dict, experiments_root: Path) -> tuple[pd.DataFrame, list[str]]:
    metrics = params["report"]["table_metrics"]
    frames, descriptions = {}, []
    for dataset in params["datasets"]:
        result = _read_json(experiments_root / dataset / "transfer.json")
        frame = pd.DataFrame({name: {m: row["metrics"].get(m, float("nan")) for m in metrics} for name, row in result["rows"].items()}).T
        frames[f"{result['source']} to {result['target']}"] = frame.reindex([r for r in TRANSFER_ROWS if r in frame.index])
        budget = result["train"]
        descriptions.append(
            f"{result['run']} trained on {result['source']}, scored on the {result['rows']['scratch']['test_users']} test users of "
            f"{result['target']}; fine-tuning and training from scratch: at most {budget['max_steps']} steps, "
            f"validation every {budget['eval_every']}" + ("" if "zero_shot" in result["rows"] else "; no zero-shot row (the run has no multimodal view)")
        )
    return _per_dataset(params, frames, "setting"), descriptions


EFFICIENCY_COLUMNS = {
    "parameters": "parameters",
    "samples_per_second": "train samples/s",
    "seconds_to_best": "s to best step",
    "peak_memory_mb": "peak memory (MiB)",
    "eval_seconds": "test eval s",
}


def efficiency_table(params: dict, experiments_root: Path) -> tuple[pd.DataFrame, list[str]]:
    frames, kinds = {}, set()
    for dataset in params["datasets"]:
        runs = _read_json(experiments_root / dataset / "efficiency.json")["runs"]
        frame = pd.DataFrame({run: {label: costs[key] for key, label in EFFICIENCY_COLUMNS.items()} for run, costs in runs.items()}).T
        frame = frame.reindex(params["runs"])
        frame["parameters"] = frame["parameters"].fillna(0).round().astype(int)
        frames[dataset] = frame
        kinds |= {f"{costs['device']} ({costs['peak_memory_kind']})" for costs in runs.values()}
    return _per_dataset(params, frames, "model"), sorted(kinds)


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
    tuning = tune_table(params, experiments_root)
    write_table(tuning, out_root / "tables" / "tune", "Hyper-parameter selection on validation users",
                note="Each grid point trained once (first training seed), early-stopped on validation; the chosen point's "
                "settings train the main run for every seed, and only the main run is scored on the test split."
                if len(tuning) else "No tuning: tune.grid, tune.runs or tune.datasets is empty for these datasets.")
    pooled, pooled_tests = pooled_tables(params, metrics_root)
    pools = complete_pools(params)
    skipped = sorted(set(params["report"].get("pools", {})) - set(pools))
    pool_note = ("; ".join(f"{pool} = {', '.join(members)}" for pool, members in pools.items()) or "No pools.") + (
        f" Skipped (not every member among datasets): {', '.join(skipped)}." if skipped else "")
    write_table(pooled, out_root / "tables" / "pooled", "Test metrics pooled over the test users of several datasets (e.g. user folds)",
                rank_marks(pooled), note=pool_note)
    write_table(pooled_tests, out_root / "tables" / "pooled_tests", f"{proposed} against every other run, paired over pooled test users",
                note="Two-sided Wilcoxon signed-rank test over users; per-user values are means over training seeds. " + pool_note)
    enabled = params["experiments"]["enabled"]

    def not_run_table(name: str, caption: str) -> None:
        write_table(pd.DataFrame(index=pd.Index([], name="setting")), out_root / "tables" / name, caption,
                    note=f"Not run: {name} is not in experiments.enabled.")

    cold_per_dataset = {}
    if "cold_start" in enabled:
        cold, cold_per_dataset = cold_start_table(params, experiments_root, select_metric)
        write_table(cold, out_root / "tables" / "cold_start", f"Cold start ({select_metric})", rank_marks(cold))
    else:
        not_run_table("cold_start", f"Cold start ({select_metric})")

    ablation_rows = []
    if "ablation" in enabled:
        ablation, ablation_spread, ablation_marks, control_notes, ablation_seeds = ablation_table(params, experiments_root)
        ablation_rows = list(ablation.index)
        write_table(
            ablation, out_root / "tables" / "ablation", "Ablation: test metrics of the full model and each setting",
            marks=None, sig=ablation_marks, spread=ablation_spread if ablation_seeds > 1 else None,
            note=f"* = differs from the full model (two-sided Wilcoxon signed-rank over test users, p < {SIGNIFICANCE_LEVEL}); "
            + (f"mean ± std over {ablation_seeds} training seeds. " if ablation_seeds > 1 else "one training seed. ")
            + " ".join(control_notes),
        )
    else:
        not_run_table("ablation", "Ablation: test metrics of the full model and each setting")
    if "transfer" in enabled:
        transfer, transfer_notes = transfer_table(params, experiments_root)
        write_table(transfer, out_root / "tables" / "transfer", "Cross-dataset transfer: test metrics on the target dataset",
                    rank_marks(transfer), note="; ".join(transfer_notes) + ".")
    else:
        not_run_table("transfer", "Cross-dataset transfer: test metrics on the target dataset")
    if "efficiency" in enabled:
        efficiency, devices = efficiency_table(params, experiments_root)
        write_table(efficiency, out_root / "tables" / "efficiency", "Efficiency of every run",
                    note=f"Measured on {', '.join(devices)}; timings depend on the machine and its load.")
    else:
        not_run_table("efficiency", "Efficiency of every run")

    colours = figures.palette([*params["runs"], *ablation_rows])
    histories = {
        dataset: {run: pd.read_csv(models_root / dataset / run / "history.csv") for run in params["runs"]}
        for dataset in params["datasets"]
    }
    figures.training_curves(histories, select_metric, out_root / "figures" / "training_curves", colours)
    comparison = {
        dataset: table[[c for c in table.columns if c.startswith(f"{dataset} ") or len(params["datasets"]) == 1]]
        for dataset in params["datasets"]
    }
    figures.grouped_bars(comparison, "test metric", out_root / "figures" / "metric_comparison", colours)
    at_k = select_metric.split("@")[1]
    curve_metrics = [f"recall@{at_k}", f"ndcg@{at_k}"]
    drawers = {
        "cold_start": lambda _, stem: figures.grouped_bars(cold_per_dataset, f"test {select_metric}", stem, colours),
        "noise": lambda results, stem: figures.noise_curves(results, curve_metrics, stem, colours),
        "sensitivity": lambda results, stem: figures.sensitivity_lines(results, curve_metrics, stem, colours),
        "interests": lambda results, stem: figures.interest_maps(results, stem),
    }
    experiments = {  # a disabled experiment has no results: its figure says so, its plot data is empty
        name: {dataset: _read_json(experiments_root / dataset / f"{name}.json") for dataset in params["datasets"]} if name in enabled else {}
        for name in ("noise", "sensitivity", "interests")
    }
    for name, draw in drawers.items():
        stem = out_root / "figures" / name
        if name not in enabled:
            figures.not_run(stem, f"Not run: {name} is not in experiments.enabled.")
        else:
            draw(experiments.get(name), stem)

    run_values = {
        (dataset, run): {metric: float(table.at[run, table_column(params, dataset, metric)]) for metric in params["report"]["table_metrics"]}
        for dataset in params["datasets"]
        for run in params["runs"]
    }
    dvc_files.write_summaries(run_values, out_root / "summary")
    plots = out_root / "plots"
    dvc_files.training_curves_data(histories, select_metric, plots / "training_curves.csv")
    dvc_files.metric_comparison_data(run_values, plots / "metric_comparison.csv")
    dvc_files.noise_data(experiments["noise"], curve_metrics, plots / "noise.csv")
    dvc_files.sensitivity_data(experiments["sensitivity"], curve_metrics, plots / "sensitivity.csv")

    tables = ["main", "datasets", "tune", "pooled", "pooled_tests", "cold_start", "ablation", "transfer", "efficiency"]
    figure_names = ["training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"]
    headings = {
        "main": "Main table",
        "datasets": "Datasets",
        "tune": "Hyper-parameter selection (validation)",
        "pooled": "Pooled test users",
        "pooled_tests": f"Paired tests of {params['report']['proposed_run']} over pooled test users",
        "cold_start": f"Cold start ({select_metric})",
        "ablation": "Ablation",
        "transfer": "Cross-dataset transfer",
        "efficiency": "Efficiency",
    }
    summary = [
        "# bivrec results",
        "",
        f"Tables: {', '.join(f'`tables/{t}`' for t in tables)} (.csv/.md/.tex). "
        f"Figures: {', '.join(f'`figures/{f}`' for f in figure_names)} (.png/.pdf).",
        "",
        "## Feature encoders",
        *encoder_notes(params, features_root),
    ]
    for name in tables:
        summary += ["", f"## {headings[name]}", (out_root / "tables" / f"{name}.md").read_text()]
    summary += ["", "## Figures", *(f"- [{name}](figures/{name}.png) ([PDF](figures/{name}.pdf))" for name in figure_names), ""]
    write_text(out_root / "report.md", "\n".join(summary))
