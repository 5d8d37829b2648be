"""The terminal table of ``attrbench run``: headline metrics that fit 100 columns by default,
``--columns all|a,b`` to choose, ``value±half-width`` cells."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from attrbench.catalog import METRICS
from attrbench.cli import main
from attrbench.tables import TERMINAL_WIDTH, headline_metrics, plus_minus, render_text

# the summary of a default synthetic run (every method and default metric, 100 images)
DEFAULT_RUN = Path(__file__).resolve().parents[1] / "results" / "baselines" / "synthetic.json"


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads(DEFAULT_RUN.read_text())


def _body(text: str) -> list[list[str]]:
    """The data rows (after the ``---`` rule, up to the blank line), split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_default_table_fits_100_columns(summary):
    text = render_text(summary)
    assert max(len(line) for line in text.splitlines()) <= TERMINAL_WIDTH
    body = _body(text)
    shown = headline_metrics(list(summary["metrics"]))
    assert len(shown) >= 5
    assert [r[0] for r in body] == summary["methods"]
    assert all(len(r) == 2 + len(shown) for r in body)  # method, n, one cell per headline metric
    assert "left out" not in text
    r = summary["results"]["explainer"]["metrics"]["mean_f1"]
    assert body[0][2] == plus_minus(r["value"], r["ci_low"], r["ci_high"])


def test_headline_comes_from_the_metric_classes(summary, monkeypatch):
    names = list(summary["metrics"])
    declared = [k for k in names if METRICS.get(k).headline]
    assert headline_metrics(names) == declared
    assert "mean_f1" in declared and "gini" not in declared
    monkeypatch.setattr(METRICS.get("gini"), "headline", True)
    assert "gini" in headline_metrics(names)
    assert headline_metrics(["not_a_metric", "mean_f1"]) == ["mean_f1"]


def test_columns_all_gives_every_metric(summary):
    text = render_text(summary, "all")
    body = _body(text)
    assert all(len(r) == 2 + len(summary["metrics"]) for r in body)
    assert max(len(line) for line in text.splitlines()) > TERMINAL_WIDTH  # not squeezed


def test_columns_list_in_its_order(summary):
    text = render_text(summary, "time_ms,gini")
    header = text.splitlines()[0]
    assert header.index("time_ms") < header.index("gini")
    assert all(len(r) == 4 for r in _body(text))
    with pytest.raises(ValueError, match="'bogus' not in this run's metrics"):
        render_text(summary, "mean_f1,bogus")


def test_narrow_width_leaves_columns_out_with_a_note(summary):
    text = render_text(summary, width=70)
    assert max(len(line) for line in text.splitlines()) <= 70
    shown = headline_metrics(list(summary["metrics"]))
    n_cells = len(_body(text)[0]) - 2
    assert 0 < n_cells < len(shown)
    note = " ".join(text.split("left out", 1)[1].split())  # the note wraps at 70 too
    assert note == f"to fit 70 columns: {', '.join(shown[n_cells:])}"


def test_failed_column_only_when_a_method_failed(summary):
    assert "failed" not in render_text(summary).splitlines()[2]
    s = copy.deepcopy(summary)
    s["results"]["rise"]["n_failed"] = 3
    text = render_text(s)
    assert "failed" in text.splitlines()[text.splitlines().index(
        next(line for line in text.splitlines() if line.startswith("method")))]
    assert max(len(line) for line in text.splitlines()) <= TERMINAL_WIDTH
    rise = next(r for r in _body(text) if r[0] == "rise")
    assert rise[2] == "3"


def test_plus_minus_uses_the_values_decimals():
    assert plus_minus(0.6736, 0.6508, 0.6961) == "0.674±0.023"
    assert plus_minus(366.94, 360.8, 373.0) == "366.9±6.1"
    assert plus_minus(1234.0, 1000.0, 1500.0) == "1234±250"
    assert plus_minus(0.5, None, None) == "0.500"
    assert plus_minus(None, 0.1, 0.2) == "–"


def test_run_prints_the_chosen_columns(tmp_path, capsys):
    args = ["run", "--methods", "center,constant_0.5", "--metrics", "mean_f1,gini,time_ms",
            "--limit", "4", "--no-progress", "--no-report"]
    assert main(args + ["--out", str(tmp_path / "r")]) == 0
    default = capsys.readouterr().out.split("wall time")[0]  # the table (timings follow it)
    assert "mean_f1 ↑" in default and "gini" not in default  # gini is not a headline metric
    assert main(args + ["--out", str(tmp_path / "r"), "--columns", "all"]) == 0  # resumed
    out = capsys.readouterr().out
    assert all(len(r) == 5 for r in _body(out))
    assert main(args + ["--out", str(tmp_path / "r2"), "--columns", "mean_f1,cont_iou"]) == 2
    assert "--metrics leaves out" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
