"""Result tables written as CSV, Markdown and LaTeX from one DataFrame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bivrec.atomic import write_text
from bivrec.evaluate import paired_significance

SIGNIFICANCE_LEVEL = 0.05


def rank_marks(table: pd.DataFrame) -> pd.DataFrame:
    """Per column: 'best', 'second' or '' for each row (higher is better; NaN never ranks)."""
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    for column in table.columns:
        order = table[column].dropna().sort_values(ascending=False, kind="stable")
        distinct = order.unique()
        if len(distinct) > 0:
            marks.loc[order.index[order == distinct[0]], column] = "best"
        if len(distinct) > 1:
            marks.loc[order.index[order == distinct[1]], column] = "second"
    return marks


def significance_marks(per_user: dict[str, pd.DataFrame], table: pd.DataFrame, proposed: str, dataset_of: dict) -> pd.DataFrame:
    """'*' where ``proposed`` beats the best other run with Wilcoxon p < 0.05 (paired over users)."""
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    if proposed not in table.index:
        return marks
    others = [run for run in table.index if run != proposed]
    for column in table.columns:
        dataset, metric = dataset_of[column]
        scores = table.loc[others, column].dropna()
        if scores.empty or (proposed, dataset) not in per_user:
            continue
        best_other = scores.idxmax()
        if not table.at[proposed, column] > scores[best_other]:
            continue
        a = per_user[(proposed, dataset)][metric].to_numpy()
        b = per_user[(best_other, dataset)][metric].to_numpy()
        if paired_significance(a, b) < SIGNIFICANCE_LEVEL:
            marks.loc[proposed, column] = "*"
    return marks


def _format(value: float, rank: str, sig: str, style: str, spread: float | None = None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "--" if style == "tex" else "–"
    text = f"{value:.4f}{sig}"
    if spread is not None and not np.isnan(spread):
        text += f" $\\pm$ {spread:.4f}" if style == "tex" else f" ± {spread:.4f}"
    if style == "md":
        return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(rank, text)
    if style == "tex":
        text = text.replace("*", "$^{*}$")
        return {"best": f"\\textbf{{{text}}}", "second": f"\\underline{{{text}}}"}.get(rank, text)
    return text


TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "–": "--",
}


def escape_tex(text) -> str:
    """``text`` with every LaTeX special character escaped (one pass, so no escape is escaped again)."""
    return "".join(TEX_SPECIAL.get(char, char) for char in str(text))



def write_table(
    table: pd.DataFrame,
    out_stem: Path,
    caption: str,
    marks: pd.DataFrame | None = None,
    sig: pd.DataFrame | None = None,
    note: str = "",
    spread: pd.DataFrame | None = None,
) -> None:
    """Write ``<stem>.csv`` (raw numbers), ``.md`` and ``.tex`` (formatted, best bold, second underlined).

    ``spread``: a standard deviation per cell (same index and columns), shown as ``mean ± std`` in the
    Markdown and LaTeX tables and as ``<column> std`` columns in the CSV."""
    marks = pd.DataFrame("", index=table.index, columns=table.columns) if marks is None else marks
    sig = pd.DataFrame("", index=table.index, columns=table.columns) if sig is None else sig
    index_name = table.index.name or ""
    with_index = table.reset_index()
    if spread is not None:
        for column in (c for c in table.columns if c in spread.columns):
            with_index[f"{column} std"] = spread[column].to_numpy()
    write_text(out_stem.with_suffix(".csv"), with_index.to_csv(index=False))

    def cell(row, column, style):
        value = table.at[row, column]
        if isinstance(value, (int, np.integer)):
            return f"{value:,}".replace(",", "{,}") if style == "tex" else f"{value:,}"
        if not isinstance(value, (float, np.floating)):
            return escape_tex(value) if style == "tex" else str(value)
        deviation = None if spread is None or column not in spread.columns else float(spread.at[row, column])
        return _format(float(value), marks.at[row, column], sig.at[row, column], style, deviation)

    header = [index_name] + [str(c) for c in table.columns]
    md = [f"<!-- {caption} -->", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join([str(row)] + [cell(row, c, "md") for c in table.columns]) + " |" for row in table.index]
    if note:
        md += ["", note]
    # a note holds Markdown (`code`) and plain text: its TeX form is escaped, in a footnote-sized line
    tex_note = ["\\par\\footnotesize " + escape_tex(note.replace("`", ""))] if note else []
    write_text(out_stem.with_suffix(".md"), "\n".join(md) + "\n")

    tex = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{escape_tex(caption)}}}",
        "\\begin{tabular}{l" + "r" * len(table.columns) + "}",
        "\\toprule",
        " & ".join(escape_tex(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    tex += [" & ".join([escape_tex(row)] + [cell(row, c, "tex") for c in table.columns]) + " \\\\" for row in table.index]
    tex += ["\\bottomrule", "\\end{tabular}", *tex_note, "\\end{table}"]
    write_text(out_stem.with_suffix(".tex"), "\n".join(tex) + "\n")
