"""Which BiVRec readout and ``fused_prior_count`` the validation users prefer, for a run already trained.

Loads a trained run (``python -m bivrec train``'s folder, every training seed) on its data and features,
then scores only the VALIDATION users (never the test split) under each readout (``fused``, ``id``,
``mm``, ``max``, ``sum``) and, for ``fused``, each prior count. A readout changes only how the trained
model scores items (``BiVRec.configure_readout``), so nothing is retrained; the model itself was selected
(early stopping on validation) under the readout it was trained with. Prints a Markdown table of
Recall@20 and NDCG@20 over all validation users and over those whose target is a cold item
(``experiments.cold_start.max_item_interactions`` or fewer training interactions), scored on those
targets ranked among all items and among the cold items only (the item cold-start protocol of
bivrec/experiments/cold_start.py), pooled over the datasets given (e.g. user folds), with paired Wilcoxon p-values against the trained readout.

    .venv/bin/python benchmarks/validation_defaults.py --datasets synthetic
    .venv/bin/python benchmarks/validation_defaults.py --root ../paperrun --datasets ml100k_f0 ml100k_f1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from bivrec.config import load_params
from bivrec.data.dataset import DataError, SequenceData
from bivrec.evaluate import eval_options, evaluate, paired_significance
from bivrec.experiments.cold_start import cold_item_split, cold_items
from bivrec.runs import load_trained

READOUTS = ("fused", "id", "mm", "max", "sum")
METRICS = ("recall@20", "ndcg@20")


def readout_settings(prior_counts) -> dict[str, dict]:
    """Setting label -> the readout part of a BiVRec config: ``fused`` once per prior count, then the others."""
    settings = {f"fused, prior {count:g}": {"readout": "fused", "fused_prior_count": count} for count in prior_counts}
    settings.update({readout: {"readout": readout} for readout in READOUTS if readout != "fused"})
    return settings


def setting_label(model) -> str:
    """The label of the readout a loaded model scores with."""
    return f"fused, prior {model.fused_prior_count:g}" if model.readout == "fused" else model.readout


def score_validation(models, data: SequenceData, settings: dict[str, dict], cold_threshold: int, eval_cfg: dict) -> dict:
    """Per validation user Recall@20 and NDCG@20 under each setting, averaged over ``models`` (a run's
    training seeds): {setting: {group: {metric: array, "users": array}}}, groups as in
    bivrec/experiments/cold_start.py: ``all``, ``cold_items`` (cold targets ranked among all items),
    ``cold_among_cold`` (ranked among the cold items). Reads ``data.valid`` and the training counts only.
    Leaves the models scoring under the last setting."""
    cold_split = cold_item_split(data.valid, data.item_counts, cold_threshold)
    groups = {  # name: (split, candidates)
        "all": (data.valid, None),
        "cold_items": (cold_split, None),
        "cold_among_cold": (cold_split, cold_items(data.item_counts, cold_threshold)),
    }
    options = {**eval_options(eval_cfg), "topk": [20]}
    scores = {}
    for label, readout_cfg in settings.items():
        scores[label] = {}
        for group, (split, candidates) in groups.items():
            per_seed = []
            for model in models:
                model.configure_readout(readout_cfg)
                per_seed.append(evaluate(model, split, candidates=candidates, **options).per_user)
            scores[label][group] = {m: np.mean([p[m] for p in per_seed], axis=0) for m in METRICS}
            scores[label][group]["users"] = per_seed[0]["users"]
    return scores


def pooled(per_dataset: list[dict]) -> dict:
    """The per-user values of several datasets (user folds) concatenated, setting by setting."""
    return {
        label: {
            group: {key: np.concatenate([d[label][group][key] for d in per_dataset]) for key in per_dataset[0][label][group]}
            for group in per_dataset[0][label]
        }
        for label in per_dataset[0]
    }


def markdown_table(scores: dict, reference: str) -> str:
    """One row per setting; p = paired Wilcoxon test of the users' Recall@20 against ``reference``."""
    lines = [
        "| Setting | R@20 | N@20 | p (R@20) | cold R@20 | cold N@20 | cold among cold R@20 | cold among cold N@20 | p (cold among cold R@20) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, groups in scores.items():
        cells = [label + (" (trained)" if label == reference else "")]
        for group, with_p in (("all", True), ("cold_items", False), ("cold_among_cold", True)):
            values = groups[group]
            if len(values["users"]) == 0:
                cells += ["–", "–"] + (["–"] if with_p else [])
                continue
            cells += [f"{values['recall@20'].mean():.4f}", f"{values['ndcg@20'].mean():.4f}"]
            if with_p:
                p = paired_significance(values["recall@20"], scores[reference][group]["recall@20"])
                cells.append("–" if label == reference else f"{p:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="folder holding models/, data/ and features/")
    parser.add_argument("--datasets", nargs="+", default=["synthetic"], help="reads <root>/models/<dataset>/<run>, <root>/data/<dataset>, <root>/features/<dataset>; several are pooled")
    parser.add_argument("--run", default="bivrec")
    parser.add_argument("--prior-counts", nargs="+", type=float, default=[1, 3, 10, 30, 100])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="eval batch sizes and the cold-item threshold")
    parser.add_argument("--cold-threshold", type=int, default=None, help="default: experiments.cold_start.max_item_interactions")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    threshold = args.cold_threshold if args.cold_threshold is not None else params["experiments"]["cold_start"]["max_item_interactions"]
    settings = readout_settings(args.prior_counts)
    per_dataset, references, summary = [], set(), []
    for dataset in args.datasets:
        try:
            models, data, configs = load_trained(args.root / "models" / dataset / args.run, args.root / "data" / dataset, args.root / "features" / dataset)
        except DataError as error:
            parser.error(str(error))
        if configs[0]["model"] != "bivrec" or not hasattr(models[0], "configure_readout"):
            parser.error(f"{args.run} on {dataset} is a {configs[0]['model']} run, not bivrec")
        if models[0].views != ("id", "mm"):
            parser.error(f"{args.run} on {dataset} has views {models[0].views}: comparing readouts needs both")
        references.add(setting_label(models[0]))
        print(f"{dataset}: scoring {len(data.valid)} validation users, seeds {[c['seed'] for c in configs]}", file=sys.stderr, flush=True)
        per_dataset.append(score_validation(models, data, settings, threshold, params["eval"]))
        cold_users = len(per_dataset[-1][next(iter(settings))]["cold_items"]["users"])
        summary.append(f"{dataset} ({len(data.valid)} validation users, {cold_users} with a cold target, seeds {', '.join(str(c['seed']) for c in configs)})")
    if len(references) != 1:
        parser.error(f"the runs were trained with different readouts {sorted(references)}; compare them separately")
    reference = references.pop()
    if reference not in settings:
        parser.error(f"the trained readout {reference!r} is not among the settings; add its prior count to --prior-counts")
    print(f"Run {args.run}, validation users of: {'; '.join(summary)}. Cold target: at most {threshold} training interactions.\n")
    print(f"p: paired Wilcoxon test of the users' Recall@20 against the trained readout ({reference}).\n")
    print(markdown_table(pooled(per_dataset), reference))


if __name__ == "__main__":
    main()
