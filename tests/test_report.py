import json

import numpy as np
import pandas as pd

from bivrec.report.build import dataset_table
from bivrec.report.tables import rank_marks, significance_marks, write_table


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every row of a Markdown table (padding stripped)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]


def test_rank_marks_best_second_ties_and_nan():
    table = pd.DataFrame({"m": [0.3, 0.5, 0.5, np.nan, 0.1]}, index=list("abcde"))
    marks = rank_marks(table)["m"].to_dict()
    assert marks == {"a": "second", "b": "best", "c": "best", "d": "", "e": ""}


def test_significance_marks_compare_with_the_best_other_run():
    rng = np.random.default_rng(0)
    strong, weak = rng.uniform(0.5, 1, 300), rng.uniform(0, 0.5, 300)
    per_user = {
        ("bivrec", "ds"): pd.DataFrame({"recall@20": strong}),
        ("sasrec", "ds"): pd.DataFrame({"recall@20": weak}),
        ("pop", "ds"): pd.DataFrame({"recall@20": weak / 2}),
    }
    table = pd.DataFrame({"recall@20": [strong.mean(), weak.mean(), weak.mean() / 2]}, index=["bivrec", "sasrec", "pop"])
    marks = significance_marks(per_user, table, "bivrec", {"recall@20": ("ds", "recall@20")})
    assert marks.loc["bivrec", "recall@20"] == "*" and marks.loc["sasrec", "recall@20"] == ""
    table.loc["bivrec", "recall@20"] = 0.0  # significantly worse is not marked
    assert significance_marks(per_user, table, "bivrec", {"recall@20": ("ds", "recall@20")}).loc["bivrec", "recall@20"] == ""
    table.loc["bivrec", "recall@20"] = strong.mean()
    per_user[("sasrec", "ds")] = pd.DataFrame({"recall@20": strong})  # identical -> not significant
    table.loc["sasrec", "recall@20"] = strong.mean()
    assert significance_marks(per_user, table, "bivrec", {"recall@20": ("ds", "recall@20")}).loc["bivrec", "recall@20"] == ""


def test_write_table_formats_every_output(tmp_path):
    table = pd.DataFrame({"recall@20": [0.25, 0.125], "ndcg@20": [0.1, 0.2]}, index=pd.Index(["bivrec", "sasrec"], name="model"))
    sig = pd.DataFrame("", index=table.index, columns=table.columns)
    sig.loc["bivrec", "recall@20"] = "*"
    write_table(table, tmp_path / "main", "Main", rank_marks(table), sig, note="note")
    csv = pd.read_csv(tmp_path / "main.csv")
    assert list(csv.columns) == ["model", "recall@20", "ndcg@20"] and csv["recall@20"].tolist() == [0.25, 0.125]
    md = (tmp_path / "main.md").read_text()
    assert ["bivrec", "**0.2500***", "<u>0.1000</u>"] in markdown_rows(md) and md.rstrip().endswith("note")
    header, alignment = markdown_rows(md)[:2]
    assert header == ["model", "recall@20", "ndcg@20"]
    assert alignment[0].startswith(":") and all(a.endswith(":") for a in alignment[1:])  # names left, numbers right
    tex = (tmp_path / "main.tex").read_text()
    assert "\\textbf{0.2500$^{*}$}" in tex and "\\underline{0.1250}" in tex and "recall@20" in tex


def test_dataset_table_keeps_counts_integer(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "stats.json").write_text(json.dumps({"users": 10.0, "items": 5, "interactions": 40, "avg_length": 4.0, "density": 0.8, "extra": 1}))
    table = dataset_table({"datasets": ["toy"]}, tmp_path)
    assert list(table.columns) == ["users", "items", "interactions", "avg_length", "density"]
    assert table.loc["toy", "users"] == 10 and table["users"].dtype.kind == "i"
    write_table(table, tmp_path / "datasets", "Datasets")
    assert ["toy", "10", "5", "40", "4.0000", "0.8000"] in markdown_rows((tmp_path / "datasets.md").read_text())


def test_encoder_description_says_plainly_what_the_features_are():
    from bivrec.report.build import describe_encoder

    random_init = {"encoder": {"family": "open_clip", "arch": "ViT-B-32", "pretrained": False}, "dim": 512,
                   "n_items": 100, "masked": {"total": 0}}
    assert "NOT a pretrained encoder" in describe_encoder("toy", "image", random_init)
    pretrained = {"encoder": {"family": "torchvision", "arch": "mobilenet_v2", "pretrained": True}, "dim": 1280,
                  "n_items": 7050, "masked": {"total": 7050}}
    line = describe_encoder("baby", "image", pretrained)
    assert "torchvision mobilenet_v2, pretrained weights" in line and "7,050 of 7,050 items have no image" in line


def test_multi_panel_figures_have_one_legend_right_of_the_last_panel(tmp_path, monkeypatch):
    from bivrec.report import figures

    saved = []
    monkeypatch.setattr(figures, "save", lambda fig, out_stem: saved.append(fig))
    history = lambda values: pd.DataFrame({"step": [1, 2], "valid_recall@20": values})  # noqa: E731
    histories = {"f0": {"a": history([0.1, 0.2]), "b": history([0.2, 0.1])}, "f1": {"a": history([0.3, 0.2]), "c": history([0.1, 0.3])}}
    colours = figures.palette(["a", "b", "c"])
    figures.training_curves(histories, "recall@20", tmp_path / "curves", colours)
    bars = {"f0": pd.DataFrame({"recall@20": [0.1, 0.2]}, index=["a", "b"]), "f1": pd.DataFrame({"recall@20": [0.3]}, index=["c"])}
    figures.grouped_bars(bars, "test metric", tmp_path / "bars", colours)
    for fig in saved:
        left, right = fig.axes
        assert left.get_legend() is None  # nothing between the panels
        assert [text.get_text() for text in right.get_legend().get_texts()] == ["a", "b", "c"]
