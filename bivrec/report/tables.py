"""Result tables written as CSV, Markdown (``DataFrame.to_markdown``) and LaTeX (``Styler.to_latex``) from one DataFrame."""

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


def _format(value: float, sig: str, style: str, spread: float | None = None) -> str:
    """One metric cell: 4 decimals, the significance mark, ``± std`` where given. In the TeX form every
    math part sits between ``$`` so that the table's escaping (pandas ``latex-math``) leaves it alone."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "--" if style == "tex" else "–"
    text = f"{value:.4f}" + ("$^{*}$" if sig and style == "tex" else sig)
    if spread is not None and not np.isnan(spread):
        text += f" $\\pm$ {spread:.4f}" if style == "tex" else f" ± {spread:.4f}"
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


RANK_MARKDOWN = {"best": "**{}**", "second": "<u>{}</u>"}
RANK_TEX = {"best": "textbf: --rwrap;", "second": "underline: --rwrap;"}  # Styler writes \\textbf{cell}, \\underline{cell}


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
            return f"{value:,}"
        if not isinstance(value, (float, np.floating)):
            return str(value)
        deviation = None if spread is None or column not in spread.columns else float(spread.at[row, column])
        return _format(float(value), sig.at[row, column], style, deviation)

    def formatted(style: str) -> pd.DataFrame:
        """The table as display strings, its row labels as the first column (named like the index)."""
        cells = {str(c): [cell(row, c, style) for row in table.index] for c in table.columns}
        return pd.DataFrame({index_name: [str(row) for row in table.index], **cells})

    align = ["left"] + ["right" if pd.api.types.is_numeric_dtype(table[c]) else "left" for c in table.columns]  # numbers right
    markdown = formatted("md")
    for column in table.columns:
        ranks = marks[column].to_numpy()
        markdown[str(column)] = [RANK_MARKDOWN.get(rank, "{}").format(text) for rank, text in zip(ranks, markdown[str(column)])]
    md = [f"<!-- {caption} -->", markdown.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)]
    if note:
        md += ["", note]
    write_text(out_stem.with_suffix(".md"), "\n".join(md) + "\n")

    tex = formatted("tex")
    styles = pd.DataFrame("", index=tex.index, columns=tex.columns)
    for column in table.columns:
        styles[str(column)] = [RANK_TEX.get(rank, "") for rank in marks[column].to_numpy()]
    latex = (
        tex.style.hide(axis="index")
        .format(escape="latex-math")  # cell text escaped; the $...$ parts (from _format) kept
        .format_index(escape="latex", axis="columns")
        .apply(lambda _: styles, axis=None)
        .to_latex(
            environment="table", position="t", position_float="centering", hrules=True,
            caption=escape_tex(caption), column_format="".join(a[0] for a in align),
        )
    )
    if note:  # a note holds Markdown (`code`) and plain text: escaped, in a footnote-sized line under the tabular
        latex = latex.replace("\\end{table}", "\\par\\footnotesize " + escape_tex(note.replace("`", "")) + "\n\\end{table}")
    write_text(out_stem.with_suffix(".tex"), latex)
