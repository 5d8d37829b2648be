"""``attrbench report RUN_DIR``: one self-contained ``report.html`` for a run folder.

The page holds the comparison table (values, 95 % CIs, best values, paired tests against the
reference method), every figure that :func:`attrbench.plots.make_figures` can draw for the run
(PNG embedded as ``data:`` URIs; the PDFs stay in ``RUN_DIR/figures/`` for papers), failures per
method, the metric definitions with direction and version, and - in collapsible sections - the
methods' options, the run's resolved configuration and its environment (package versions, git
hash, device). No scripts, fonts, style sheets or images are loaded from anywhere: the file can
be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["load_summary", "render_report", "write_report"]

_CSS = """
:root { --fg:#1d2330; --muted:#5b6577; --line:#d9dee7; --accent:#2357c6; --best:#e8f5e9;
        --sig:#fff4e0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1320px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 8px; }
.meta span { margin-right: 18px; white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: right;
         vertical-align: top; white-space: nowrap; }
th[scope=row], thead th:first-child, table.defs td, table.defs th { text-align: left; }
thead th { background: #f3f5f9; border-bottom: 2px solid #b8c0cf; font-weight: 600; }
tbody tr:hover { background: #f8f9fc; }
td.best { background: var(--best); }
td.sig sup, td.sig > sup { color: #b35c00; font-weight: 700; }
tr.ref th[scope=row] { color: var(--accent); }
.reftag { font-size: 10px; color: #fff; background: var(--accent); border-radius: 3px;
          padding: 1px 4px; margin-left: 4px; vertical-align: middle; }
.ci, .p { color: var(--muted); font-size: 11px; }
ul.legend { color: var(--muted); font-size: 12.5px; padding-left: 18px; max-width: 1100px; }
p.note { color: var(--muted); font-size: 12.5px; }
table.defs td { white-space: normal; }
table.defs td.nw { white-space: nowrap; }
figure { margin: 18px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; max-width: 1100px; }
figcaption b { color: var(--fg); }
details { margin: 8px 0; border: 1px solid var(--line); border-radius: 4px; padding: 6px 10px; }
summary { cursor: pointer; font-weight: 600; }
pre { font-size: 12px; background: #f6f8fa; padding: 10px; overflow-x: auto; margin: 8px 0 0; }
code { font-size: 12.5px; background: #f1f3f7; padding: 0 3px; border-radius: 3px; }
.warn { color: #9a3412; }
"""


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``summary.json``; when it is missing (e.g. a run killed before the end), the
    summary is computed from ``scores.jsonl`` and ``config.json`` and written first."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg_path, scores = run_dir / "config.json", run_dir / "scores.jsonl"
    if not cfg_path.exists() or not scores.exists():
        raise FileNotFoundError(
            f"{run_dir} is not a run folder: it has no summary.json and no "
            "config.json + scores.jsonl"
        )
    from .results import summarize, write_summary

    cfg = json.loads(cfg_path.read_text())["config"]
    summary = summarize(run_dir, list(cfg["methods"]), list(cfg["metrics"]))
    write_summary(run_dir, summary)
    return summary


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _json_block(obj: Any) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2, ensure_ascii=False))}</pre>"


def _meta_line(
    run_dir: Path, cfg: Mapping[str, Any], env: Mapping[str, Any], summary: Mapping[str, Any]
) -> str:
    e = html.escape
    preset = cfg.get("preset") or {}
    clf = cfg.get("classifier") or {}
    n_img = max(
        (r.get("n_images", 0) + r.get("n_failed", 0) for r in summary["results"].values()),
        default=0,
    )
    items = [
        ("preset", preset.get("name") if isinstance(preset, dict) else preset),
        ("split", cfg.get("split")),
        ("images", n_img),
        ("classes", cfg.get("num_classes")),
        ("classifier", " ".join(str(x) for x in (clf.get("name"), clf.get("fingerprint")) if x)),
        ("device", env.get("device")),
        ("attrbench", env.get("attrbench")),
        ("git", (env.get("git") or "")[:10] or None),
    ]
    return (
        '<p class="meta">'
        + "".join(
            f"<span><b>{e(k)}</b> {e(str(v))}</span>" for k, v in items if v not in (None, "")
        )
        + "</p>"
    )


def _per_class_html(frame) -> list[str]:
    """Per method, a collapsible table metric x class (from :func:`attrbench.views.
    per_class_frame`)."""
    if frame is None or not len(frame):
        return []
    e = html.escape
    classes = sorted(set(zip(frame["class_id"], frame["class"])))
    out = ['<h2 id="per-class">Per class</h2>',
           ('<p class="note">Each metric\'s mean over the images that contain the class (per-class '
           "metrics: their own per-class values); all values in <code>per_class.csv</code>.</p>")]
    for m in dict.fromkeys(frame["method"]):
        sub = frame[frame["method"] == m]
        head = "".join(f"<th>{e(str(c))}</th>" for _, c in classes)
        body = []
        for k in dict.fromkeys(sub["metric"]):
            vals = {(r.class_id, r[4]): r.value for r in sub[sub["metric"] == k].itertuples()}
            cells = "".join(f"<td>{vals[c]:.3f}</td>" if c in vals else "<td>–</td>"
                            for c in classes)
            body.append(f'<tr><th scope="row">{e(k)}</th>{cells}</tr>')
        out.append(f'<details><summary>{e(m)}</summary><div class="scroll"><table><thead><tr>'
                   f'<th>metric</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
                   "</div></details>")
    return out


def _timings_html(run_dir: Path) -> list[str]:
    """Where the run's wall time went (``timings.json``), largest first."""
    from .artifacts import read_timings

    t = read_timings(run_dir)
    if not t:
        return []
    e = html.escape
    total = t.get("total_s") or 0.0
    rows = [("data loading", t.get("data_s", 0.0))]
    rows += [(f"method {m}", s) for m, s in (t.get("methods_s") or {}).items()]
    rows += [(f"metric {k}", s) for k, s in (t.get("metrics_s") or {}).items()]
    rows += [("other (summary, bookkeeping)", t.get("other_s", 0.0))]
    rows.sort(key=lambda r: -r[1])
    body = "".join(f"<tr><td>{e(name)}</td><td>{s:.1f}</td>"
                   f"<td>{100 * s / total if total else 0:.1f}</td></tr>" for name, s in rows)
    return ['<h2 id="timings">Where the time went</h2>',
            (f'<p class="note">Wall time of the evaluation: {total:.1f} s (a resumed run: its last '
            "part only). Methods include their warm-up call; metrics their classifier forwards."
            "</p>"),
            ('<table class="defs"><thead><tr><th>part</th><th>seconds</th><th>%</th></tr>'
            f"</thead><tbody>{body}</tbody></table>")]


def render_report(
    run_dir: str | Path,
    summary: Mapping[str, Any],
    figures: list,
    figure_errors: list[str] | None = None,
    per_class=None,
) -> str:
    """The HTML text of the report (see :func:`write_report`)."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    cfg_all = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    cfg = cfg_all.get("config", {})
    env = cfg_all.get("environment", {})
    parts = _head_html(run_dir, cfg, env, summary)
    parts += _paired_html(summary)
    parts += _figures_html(figures, figure_errors)
    parts += _per_class_html(per_class)
    parts += _timings_html(run_dir)
    parts += _failures_html(summary)
    parts += _definitions_html(summary, cfg.get("metrics", {}))
    parts += _config_html(run_dir, cfg, env)
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _head_html(run_dir: Path, cfg: Mapping[str, Any], env: Mapping[str, Any],
               summary: Mapping[str, Any]) -> list[str]:
    """The page's head, title, run line and summary table."""
    from .tables import render_html

    e = html.escape
    title = f"attrbench report — {run_dir.resolve().name}"
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
        _meta_line(run_dir, cfg, env, summary),
        (
            f'<p class="meta"><span>generated {e(generated)}</span>'
            f"<span>{len(summary['methods'])} methods × {len(summary['metrics'])} metrics</span></p>"
        ),
        '<h2 id="summary">Summary</h2>',
        '<div class="scroll">',
        render_html(summary),
        "</div>",
    ]


def _paired_html(summary: Mapping[str, Any]) -> list[str]:
    """The paired comparisons with the reference method (none without a reference)."""
    from .tables import render_paired_html

    paired = render_paired_html(summary)
    if not paired:
        return []
    ref = (summary.get("paired") or {}).get("reference")
    return [
        f'<h2 id="paired">Paired comparison with {html.escape(str(ref))}</h2>',
        '<div class="scroll">',
        paired,
        "</div>",
    ]


def _figures_html(figures: list, figure_errors: list[str] | None) -> list[str]:
    """Each figure inline (PNG as a data URI), then a warning per skipped figure."""
    e = html.escape
    parts = []
    if figures or figure_errors:
        parts.append('<h2 id="figures">Figures</h2>')
    for f in figures:
        parts.append(
            f'<figure id="fig-{e(f.key)}"><img alt="{e(f.title)}" src="{_data_uri(f.png)}">'
            f"<figcaption><b>{e(f.title)}.</b> {e(f.caption)} "
            f"(PDF: <code>figures/{e(f.pdf.name)}</code>)</figcaption></figure>"
        )
    for msg in figure_errors or []:
        parts.append(f'<p class="warn">Figure skipped: {e(msg)}</p>')
    return parts


def _failures_html(summary: Mapping[str, Any]) -> list[str]:
    """The methods' failed images by reason (nothing when no method failed)."""
    e = html.escape
    failures = {m: r.get("failures") for m, r in summary["results"].items() if r.get("failures")}
    if not failures:
        return []
    parts = [
        '<h2 id="failures">Failures</h2>',
        (
            '<table class="defs"><thead><tr>'
            "<th>method</th><th>failed images</th><th>reasons</th></tr></thead><tbody>"
        ),
    ]
    for m, f in failures.items():
        reasons = "; ".join(f"{reason} ({n})" for reason, n in f.items())
        parts.append(
            f"<tr><td>{e(m)}</td><td>{summary['results'][m]['n_failed']}</td>"
            f"<td>{e(reasons)}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts


def _definitions_html(summary: Mapping[str, Any], cfg_metrics: Mapping[str, Any]) -> list[str]:
    """Per metric: direction, version, definition and the run's options."""
    e = html.escape
    parts = [
        '<h2 id="metrics">Metric definitions</h2>',
        (
            '<table class="defs"><thead><tr>'
            "<th>metric</th><th>better</th><th>version</th><th>definition</th><th>options</th>"
            "</tr></thead><tbody>"
        ),
    ]
    for k, d in summary["metrics"].items():
        opts = (cfg_metrics.get(k) or {}).get("options") or {}
        parts.append(
            f"<tr><td><code>{e(k)}</code></td>"
            f'<td class="nw">{"↑ higher" if d["higher_is_better"] else "↓ lower"}</td>'
            f"<td>v{e(str(d['version']))}</td><td>{e(d.get('definition', ''))}</td>"
            f"<td>{e(json.dumps(opts)) if opts else ''}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts


def _config_html(run_dir: Path, cfg: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """The resolved configuration, the environment and the run folder's files, collapsed."""
    parts = ['<h2 id="config">Configuration and environment</h2>']
    if cfg.get("methods"):
        parts.append(
            "<details><summary>Methods and their options</summary>"
            + _json_block(cfg["methods"])
            + "</details>"
        )
    parts.append(
        "<details><summary>Resolved configuration (config.json)</summary>"
        + _json_block(cfg)
        + "</details>"
    )
    parts.append(
        "<details><summary>Environment (versions, git hash, device)</summary>"
        + _json_block(env)
        + "</details>"
    )
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    parts.append(
        "<details><summary>Run folder files</summary><pre>"
        + html.escape("\n".join(files))
        + "</pre></details>"
    )
    return parts


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` (and the figures into ``RUN_DIR/figures/``).

    Args:
        run_dir: a run folder written by ``attrbench run``.

    Returns:
        The path of ``report.html``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder.
    """
    from .plots import make_figures
    from .rundir import atomic_write_text

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    summary = load_summary(run_dir)
    errors: list[str] = []
    figures = make_figures(run_dir, summary, errors=errors)
    views, per_class = _views(run_dir, summary, errors)
    path = run_dir / "report.html"
    atomic_write_text(path, render_report(run_dir, summary, figures + views, errors, per_class))
    return path


def _views(run_dir: Path, summary: Mapping[str, Any], errors: list[str]):
    """The per-class figure (and ``per_class.csv``) and the worst-images figure; a failure is
    reported on the page, never fatal."""
    from . import sidefiles, views

    figs, frame = [], None
    out = run_dir / "figures"
    order = list(summary["methods"])
    try:
        frame = views.per_class_frame(run_dir, summary)
        if len(frame):
            views.write_per_class(run_dir, frame)
            f = views.plot_per_class(frame, summary, out, order)
            figs += [f] if f else []
    except (ValueError, KeyError, TypeError, OSError) as exc:
        errors.append(f"per-class view: {type(exc).__name__}: {exc}")
    worst = run_dir / sidefiles.WORST_FILE
    if worst.exists():
        try:
            f = views.plot_worst(sidefiles.load_worst(worst), out, order)
            figs += [f] if f else []
        except (ValueError, KeyError, TypeError, OSError) as exc:
            errors.append(f"{worst.name}: {type(exc).__name__}: {exc}")
    return figs, frame
