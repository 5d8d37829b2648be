"""The per-run tables: methods x metrics with 95 % CIs, best values and paired tests.

Everything here works from the summary dict that :func:`attrbench.results.summarize` builds (and
``summary.json`` stores), so tables can be rebuilt from a run folder without re-scoring:

* ``summary.md``   Markdown (:func:`render_markdown`); each cell ``value [ci_low, ci_high]``,
  the best value per column in bold, ``†`` where the method differs significantly from the
  reference method; a footer says what every mark means.
* ``summary.tex``  the same table for LaTeX (``booktabs``, :func:`render_latex`), written by
  hand (no jinja2 needed).
* ``summary.csv``  one row per method (:func:`render_csv`); per metric the value, CI, n and the
  paired comparison with the reference as separate columns (machine-readable, full precision).
* the report's HTML fragments (:func:`render_html`, :func:`render_paired_html`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from ..stats import ALPHA

__all__ = [
    "DAGGER",
    "NOT_APPLICABLE",
    "best_methods",
    "cell_text",
    "cost_metrics",
    "fmt",
    "render_csv",
    "render_html",
    "render_latex",
    "render_markdown",
    "render_paired_html",
    "sanity_methods",
    "summary_frame",
    "tex_escape",
]


def cost_metrics(summary: Mapping[str, Any]) -> frozenset[str]:
    """The summary's cost metrics (``kind = "cost"``: time, calls, memory): reported, never
    tested, never a CI regression."""
    return frozenset(k for k, d in summary["metrics"].items()
                     if d.get("kind") == "cost" or d.get("cost"))


def sanity_methods(summary: Mapping[str, Any]) -> frozenset[str]:
    """The summary's sanity rows (methods whose ``sanity`` flag is set): real rows of the
    table, but not candidates for "best in column" when another method is in the table (the
    ideal mask would always win)."""
    return frozenset(summary.get("sanity_methods") or ())


DAGGER = "†"
NOT_APPLICABLE = "n/a"


# ------------------------------------------------------------------------------- table model


def cell_text(c: Mapping[str, Any]) -> str:
    """A cell's value: ``n/a`` where the metric's protocol does not cover the method."""
    return NOT_APPLICABLE if c.get("not_applicable") else fmt(c.get("value"))


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell: NaN/None -> "–", large values with fewer decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        v = float(v)
        if abs(v) >= 1000:
            return f"{v:.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def best_methods(summary: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per metric, the methods with the best value (max for ↑, min for ↓; ties all win).

    Sanity rows (:func:`sanity_methods`) are candidates only when every method of the table is
    a sanity row.
    """
    methods = list(summary["methods"])
    sanity = sanity_methods(summary)
    pool = [m for m in methods if m not in sanity] or methods
    out: dict[str, list[str]] = {}
    for k, d in summary["metrics"].items():
        vals = {m: summary["results"][m]["metrics"].get(k, {}).get("value") for m in pool}
        vals = {m: float(v) for m, v in vals.items() if _finite(v)}
        if not vals:
            out[k] = []
            continue
        best = max(vals.values()) if d["higher_is_better"] else min(vals.values())
        tol = 1e-9 * max(1.0, abs(best))
        out[k] = [m for m in methods if m in vals and abs(vals[m] - best) <= tol]
    return out


def _arrow(d: Mapping[str, Any]) -> str:
    return "↑" if d["higher_is_better"] else "↓"


def _paired(summary: Mapping[str, Any]) -> dict[str, Any]:
    return summary.get("paired") or {"reference": None, "results": {}}


def _cells(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per method: name, n, failed, is_reference and per-metric cell parts."""
    paired = _paired(summary)
    ref = paired.get("reference")
    best = best_methods(summary)
    rows = []
    for m in summary["methods"]:
        r = summary["results"][m]
        cells = {}
        for k in summary["metrics"]:
            v = r["metrics"].get(k, {})
            pr = paired["results"].get(m, {}).get(k)
            cells[k] = {
                "value": v.get("value"),
                "ci_low": v.get("ci_low"),
                "ci_high": v.get("ci_high"),
                "n": v.get("n"),
                "best": m in best.get(k, []),
                "significant": bool(pr and pr.get("significant")),
                "paired": pr,
                "not_applicable": v.get("not_applicable"),
            }
        rows.append(
            {
                "method": m,
                "n": r["n_images"],
                "failed": r["n_failed"],
                "reference": m == ref,
                "cells": cells,
            }
        )
    return rows


def summary_frame(summary: Mapping[str, Any]):
    """A numeric :class:`pandas.DataFrame`, index = methods, columns = ``n_images``,
    ``n_failed``, ``is_reference`` and per metric ``k``, ``k_ci_low``, ``k_ci_high``, ``k_n``,
    ``k_best``, ``k_diff_vs_ref``, ``k_p_vs_ref``, ``k_significant``."""
    import pandas as pd

    recs = []
    for row in _cells(summary):
        rec: dict[str, Any] = {
            "method": row["method"],
            "n_images": row["n"],
            "n_failed": row["failed"],
            "is_reference": row["reference"],
        }
        for k, c in row["cells"].items():
            pr = c["paired"] or {}
            rec[k] = c["value"]
            rec[f"{k}_ci_low"] = c["ci_low"]
            rec[f"{k}_ci_high"] = c["ci_high"]
            rec[f"{k}_n"] = c["n"]
            rec[f"{k}_best"] = c["best"]
            rec[f"{k}_diff_vs_ref"] = pr.get("diff")
            rec[f"{k}_p_vs_ref"] = pr.get("p")
            rec[f"{k}_significant"] = c["significant"]
        recs.append(rec)
    df = pd.DataFrame.from_records(recs)
    return df.set_index("method") if len(df) else df


def render_csv(summary: Mapping[str, Any]) -> str:
    """``summary.csv``: :func:`summary_frame` at full precision (empty cell = undefined)."""
    return summary_frame(summary).to_csv(float_format="%.10g", lineterminator="\n")


def _footer_lines(summary: Mapping[str, Any]) -> list[str]:
    paired = _paired(summary)
    ref = paired.get("reference")
    lines = [
        (
            "`value [lo, hi]`: the metric's summary value and the 95 % percentile-bootstrap CI of "
            "the mean of its per-image values (1000 resamples over images). For metrics that "
            "aggregate otherwise (median time, per-class means of the pointing game and of class "
            "specificity) the value can lie outside that CI."
        ),
        (
            "`n`: images the method scored; `failed`: images on which the method failed (error or "
            "non-finite mask; never scored)."
        ),
        "**bold**: best value in the column (max for ↑, min for ↓)"
        + (
            "; sanity rows (ideal, center, random, constant masks) are not candidates when "
            "other methods are present."
            if any(m not in sanity_methods(summary) for m in summary["methods"])
            else "."
        ),
    ]
    n_a = sorted({(k, c["not_applicable"]) for row in _cells(summary)
                  for k, c in row["cells"].items() if c.get("not_applicable")})
    for k, why in n_a:
        lines.append(f"`{NOT_APPLICABLE}` in {k}: {why}")
    if ref is not None:
        lines.append(
            f"{DAGGER}: differs from the reference method `{ref}` (marked *ref*) at "
            f"p < {paired.get('alpha', ALPHA)} by a {paired.get('test', 'paired test')}, over "
            f"the images both methods scored; cost metrics "
            f"({', '.join(sorted(cost_metrics(summary)))}) "
            "are not tested."
        )
    return lines


def render_markdown(summary: Mapping[str, Any], title: str = "attrbench summary") -> str:
    """``summary.md``: the table, its legend, the paired comparisons and metric definitions."""
    metrics = list(summary["metrics"])
    header = ["method", "n", "failed"] + [f"{k} {_arrow(summary['metrics'][k])}" for k in metrics]
    body = []
    for row in _cells(summary):
        name = row["method"] + (" (*ref*)" if row["reference"] else "")
        cells = [name, str(row["n"]), str(row["failed"])]
        for k in metrics:
            c = row["cells"][k]
            v = cell_text(c)
            if c["best"]:
                v = f"**{v}**"
            if _finite(c["ci_low"]):
                v += f" [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]"
            if c["significant"]:
                v += f" {DAGGER}"
            cells.append(v)
        body.append(cells)
    md = [f"# {title}", "", _md_table(header, body), ""]
    md += [f"- {line}" for line in _footer_lines(summary)]
    md += _md_paired(summary, metrics)
    failures = {m: r.get("failures") for m, r in summary["results"].items() if r.get("failures")}
    if failures:
        md += ["", "## Failures", ""]
        for m, f in failures.items():
            md.append(f"- `{m}`: " + "; ".join(f"{reason} ({n})" for reason, n in f.items()))
    md += ["", "## Metric definitions", ""]
    md += [
        f"- **{k}** ({_arrow(d)}, v{d['version']}): {d['definition']}"
        for k, d in summary["metrics"].items()
    ]
    return "\n".join(md) + "\n"


def _md_paired(summary: Mapping[str, Any], metrics: list[str]) -> list[str]:
    """``summary.md``'s section of paired comparisons with the reference (none without one)."""
    paired = _paired(summary)
    if paired.get("reference") is None or not paired["results"]:
        return []
    md = [
        "",
        f"## Paired comparison with `{paired['reference']}`",
        "",
        (
            "Mean per-image difference (method − reference) over the images both scored, "
            "its 95 % CI (bootstrap) and p-value."
        ),
        "",
    ]
    ph = ["method"] + [k for k in metrics if k not in cost_metrics(summary)]
    pb = []
    for m, res in paired["results"].items():
        cells = [m]
        for k in ph[1:]:
            r = res.get(k)
            if r is None:
                cells.append("–")
                continue
            s = f"{_signed(r['diff'])}"
            if _finite(r.get("ci_low")):
                s += f" [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
            s += f" {_fmt_p(r['p'])} (n={r['n']})"
            if r.get("significant"):
                s += f" {DAGGER}"
            cells.append(s)
        pb.append(cells)
    return md + [_md_table(ph, pb)]


def _signed(v: Any) -> str:
    if not _finite(v):
        return "–"
    return ("+" if v >= 0 else "") + fmt(float(v))


def _fmt_p(p: Any) -> str:
    """``p=0.012`` / ``p<0.001`` / ``p=–``."""
    if not _finite(p):
        return "p=–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


_TEX_ESCAPES = {
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
}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def render_latex(
    summary: Mapping[str, Any], caption: str | None = None, label: str = "tab:attrbench"
) -> str:
    """``summary.tex``: a ``table`` environment (needs ``\\usepackage{booktabs}``); bold =
    best, ``$^\\dagger$`` = significant difference from the reference, CI in small type."""
    metrics = list(summary["metrics"])
    paired = _paired(summary)
    ref = paired.get("reference")
    cols = "lrr" + "c" * len(metrics)
    up, down = "$\\uparrow$", "$\\downarrow$"
    head = ["Method", "$n$", "failed"] + [
        f"{tex_escape(k)} {up if summary['metrics'][k]['higher_is_better'] else down}"
        for k in metrics
    ]
    lines = [
        "% attrbench summary table; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(head) + " \\\\",
        "\\midrule",
    ]
    for row in _cells(summary):
        name = tex_escape(row["method"]) + (" (ref)" if row["reference"] else "")
        cells = [name, str(row["n"]), str(row["failed"])]
        for k in metrics:
            c = row["cells"][k]
            v = tex_escape(cell_text(c)).replace("–", "--")
            if c["best"]:
                v = f"\\textbf{{{v}}}"
            if c["significant"]:
                v += "$^\\dagger$"
            if _finite(c["ci_low"]):
                v += f" {{\\scriptsize [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]}}"
            cells.append(v)
        lines.append(" & ".join(cells) + " \\\\")
    cap = caption or (
        "Methods $\\times$ metrics: value and 95\\,\\% bootstrap CI of the per-image mean; "
        "bold: best in column"
        + (
            f"; $^\\dagger$: differs from {tex_escape(ref)} at $p<{paired.get('alpha', ALPHA)}$ "
            f"({tex_escape(paired.get('test', 'paired test'))})"
            if ref
            else ""
        )
        + "."
    )
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{cap}}}",
        f"\\label{{{label}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def render_html(summary: Mapping[str, Any]) -> str:
    """The table as an HTML fragment (``<table class="summary">`` plus a legend list); used by
    the report. Cells carry ``class="best"`` / ``class="sig"`` and ``data-metric``."""
    e = html.escape
    metrics = list(summary["metrics"])
    out = ['<table class="summary">', "<thead><tr><th>method</th><th>n</th><th>failed</th>"]
    for k in metrics:
        d = summary["metrics"][k]
        out.append(f'<th title="{e(d["definition"])} (v{d["version"]})">{e(k)} {_arrow(d)}</th>')
    out.append("</tr></thead><tbody>")
    for row in _cells(summary):
        cls = ' class="ref"' if row["reference"] else ""
        out.append(
            f'<tr data-method="{e(row["method"])}"{cls}><th scope="row">{e(row["method"])}'
            + (' <span class="reftag">ref</span>' if row["reference"] else "")
            + f"</th><td>{row['n']}</td><td>{row['failed']}</td>"
        )
        for k in metrics:
            c = row["cells"][k]
            classes = [x for x, on in (("best", c["best"]), ("sig", c["significant"])) if on]
            v = e(cell_text(c))
            if c["best"]:
                v = f"<strong>{v}</strong>"
            if c["significant"]:
                pr = c["paired"]
                v += f'<sup title="{_fmt_p(pr["p"])}, diff={_signed(pr["diff"])}">{DAGGER}</sup>'
            if _finite(c["ci_low"]):
                v += f' <span class="ci">[{fmt(c["ci_low"])}, {fmt(c["ci_high"])}]</span>'
            cattr = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f'<td data-metric="{e(k)}"{cattr}>{v}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(
        '<ul class="legend">'
        + "".join(f"<li>{_md_inline_to_html(line)}</li>" for line in _footer_lines(summary))
        + "</ul>"
    )
    return "\n".join(out)


def _md_inline_to_html(s: str) -> str:
    """The footer's tiny Markdown subset (`code`, **bold**, *em*) -> HTML."""
    import re

    s = html.escape(s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)
    return s


def render_paired_html(summary: Mapping[str, Any]) -> str:
    """The paired comparisons as an HTML table (empty string when there are none)."""
    e = html.escape
    paired = _paired(summary)
    if paired.get("reference") is None or not paired.get("results"):
        return ""
    metrics = [k for k in summary["metrics"] if k not in cost_metrics(summary)]
    out = [f'<table class="paired"><thead><tr><th>method − {e(paired["reference"])}</th>']
    out += [f"<th>{e(k)} {_arrow(summary['metrics'][k])}</th>" for k in metrics]
    out.append("</tr></thead><tbody>")
    for m, res in paired["results"].items():
        out.append(f'<tr data-method="{e(m)}"><th scope="row">{e(m)}</th>')
        for k in metrics:
            r = res.get(k)
            if r is None:
                out.append("<td>–</td>")
                continue
            s = e(_signed(r["diff"]))
            if _finite(r.get("ci_low")):
                lo, hi = e(_signed(r["ci_low"])), e(_signed(r["ci_high"]))
                s += f' <span class="ci">[{lo}, {hi}]</span>'
            s += f'<br><span class="p">{e(_fmt_p(r["p"]))}, n={r["n"]}</span>'
            cls = ' class="sig"' if r.get("significant") else ""
            if r.get("significant"):
                s += f"<sup>{DAGGER}</sup>"
            out.append(f'<td data-metric="{e(k)}"{cls}>{s}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(
        f'<p class="note">Mean per-image difference (method − reference) over the images '
        f"both methods scored, 95 % CI and p-value of the {e(paired.get('test', ''))}; "
        f"{DAGGER}: p &lt; {paired.get('alpha', ALPHA)}.</p>"
    )
    return "\n".join(out)
