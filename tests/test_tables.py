"""Summary tables: content, best-value highlighting, CIs and paired tests (attrbench.tables)."""

from __future__ import annotations

import csv
import io
import json
import math
import random

import pytest
from report_runs import METHODS, METRICS, base_run, copy_run

from attrbench.catalog import METHODS as METHOD_REGISTRY
from attrbench.results import read_rows, summarize, write_summary
from attrbench.stats import paired_bootstrap, paired_wilcoxon
from attrbench.tables import (
    DAGGER,
    best_methods,
    render_html,
    render_latex,
    render_markdown,
)


def _md_rows(md: str) -> dict[str, list[str]]:
    """First Markdown table of summary.md -> {method: cells}."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].replace(" (*ref*)", "")] = cells
        elif rows and not line.startswith("|"):
            break
    return rows


def _fake_summary(values: dict[str, dict[str, float]], hib: dict[str, bool]) -> dict:
    return {
        "methods": list(values),
        "metrics": {
            k: {"name": k, "higher_is_better": h, "version": 1, "definition": k}
            for k, h in hib.items()
        },
        "results": {
            m: {
                "n_images": 5,
                "n_failed": 0,
                "failures": {},
                "metrics": {
                    k: {"value": v, "ci_low": None, "ci_high": None, "n": 5}
                    for k, v in vals.items()
                },
            }
            for m, vals in values.items()
        },
        # as summarize writes it: the methods whose class declares ``sanity``
        "sanity_methods": [m for m in values
                           if m in METHOD_REGISTRY and METHOD_REGISTRY.get(m).sanity],
    }


def test_run_tables_have_every_method_metric_arrow_and_ci():
    run = base_run()
    for f in ("summary.md", "summary.csv", "summary.tex", "summary.json"):
        assert (run / f).exists(), f
    md = (run / "summary.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    for k in METRICS:
        arrow = "↑" if summary["metrics"][k]["higher_is_better"] else "↓"
        assert f"{k} {arrow}" in header
        assert f"**{k}** ({arrow}, v" in md  # definition footer
    assert "time_ms ↓" in header and "mean_f1 ↑" in header
    rows = _md_rows(md)
    assert list(rows) == METHODS
    for cells in rows.values():
        assert cells[1] == "8" and cells[2] == "0"  # n, failed
        assert all("[" in c and "]" in c for c in cells[3:]), cells  # value [lo, hi]
    # CSV: CI and paired-test columns, one row per method
    table = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    assert [r["method"] for r in table] == METHODS
    for k in METRICS:
        for suffix in ("", "_ci_low", "_ci_high", "_n", "_best", "_p_vs_ref", "_significant"):
            assert f"{k}{suffix}" in table[0], f"{k}{suffix}"
    ideal = table[0]
    assert float(ideal["mean_f1"]) == pytest.approx(1.0)
    lo, v, hi = (float(ideal[f"mean_f1{s}"]) for s in ("_ci_low", "", "_ci_high"))
    assert lo <= v <= hi
    tex = (run / "summary.tex").read_text()
    assert "mean\\_f1 $\\uparrow$" in tex and "time\\_ms $\\downarrow$" in tex
    assert tex.count("\\\\\n") == len(METHODS) + 1  # header + one line per method
    assert "constant\\_0.5" in tex and "\\textbf{" in tex and "\\scriptsize [" in tex
    assert "\\begin{tabular}" in tex and "\\end{table}" in tex
    # paired comparison against the default reference (no explainer -> first method)
    assert summary["paired"]["reference"] == "ideal"
    assert "ideal (*ref*)" in md and DAGGER in md and "p < 0.05" in md


def test_best_value_is_max_for_up_and_min_for_down_and_ignores_sanity_rows():
    s = _fake_summary(
        {
            "gradcam": {"f1": 0.4, "err": 3.0, "tie": 0.5},
            "rise": {"f1": 0.6, "err": 2.0, "tie": 0.5},
            "explainer": {"f1": 0.5, "err": float("nan"), "tie": 0.2},
            "ideal": {"f1": 1.0, "err": 0.0, "tie": 1.0},
        },
        {"f1": True, "err": False, "tie": True},
    )
    assert best_methods(s) == {"f1": ["rise"], "err": ["rise"], "tie": ["gradcam", "rise"]}
    md = render_markdown(s)
    rows = _md_rows(md)
    assert rows["rise"][3].startswith("**0.600**") and rows["gradcam"][3] == "0.400"
    assert rows["rise"][4].startswith("**2.000**") and not rows["gradcam"][4].startswith("**")
    assert rows["gradcam"][5].startswith("**") and rows["rise"][5].startswith("**")
    assert not rows["ideal"][3].startswith("**")  # the sanity row is not a candidate
    assert "\\textbf{0.600}" in render_latex(s) and "\\textbf{0.400}" not in render_latex(s)
    assert render_html(s).count('class="best"') == 4
    # a table of sanity rows only: they compete among themselves
    only = _fake_summary({"ideal": {"f1": 1.0}, "random": {"f1": 0.2}}, {"f1": True})
    assert best_methods(only) == {"f1": ["ideal"]}


def test_best_value_on_the_run_matches_a_slow_scan():
    summary = json.loads((base_run() / "summary.json").read_text())
    rows = _md_rows((base_run() / "summary.md").read_text())
    for j, k in enumerate(METRICS):
        vals = {}
        for m in METHODS:
            v = summary["results"][m]["metrics"][k]["value"]
            if v is not None:
                vals[m] = v
        hib = summary["metrics"][k]["higher_is_better"]
        target = max(vals.values()) if hib else min(vals.values())
        expected = {m for m, v in vals.items() if abs(v - target) < 1e-12}
        bold = {m for m in METHODS if rows[m][3 + j].startswith("**")}
        assert bold == expected, (k, bold, expected)


def _add_twin(run, src: str, twin: str) -> None:
    rows = [r for r in read_rows(run) if r["method"] == src]
    with open(run / "scores.jsonl", "a") as f:
        f.writelines(json.dumps({**r, "method": twin}) + "\n" for r in rows)


@pytest.mark.parametrize("test", ["bootstrap", "wilcoxon"])
def test_paired_marks_known_cases(tmp_path, test):
    run = copy_run(tmp_path)
    _add_twin(run, "ideal", "ideal_twin")
    methods = ["ideal", "ideal_twin", "constant_0.5", "center"]
    s = summarize(run, methods, METRICS, reference="ideal", test=test)
    res = s["paired"]["results"]
    assert s["paired"]["reference"] == "ideal" and "ideal" not in res
    # identical methods: no difference, p = 1, no mark
    for k in ("mean_f1", "cont_iou", "auc"):
        assert res["ideal_twin"][k]["p"] == pytest.approx(1.0)
        assert res["ideal_twin"][k]["diff"] == 0.0 and not res["ideal_twin"][k]["significant"]
    # the ideal mask against an all-0.5 mask: every image differs in the same direction
    for k in ("mean_f1", "cont_iou", "auc"):
        assert res["constant_0.5"][k]["significant"], (k, res["constant_0.5"][k])
        assert res["constant_0.5"][k]["diff"] < 0
        assert res["constant_0.5"][k]["n"] == 8
    # cost metrics are never tested
    assert "time_ms" not in res["constant_0.5"] and "model_calls" not in res["constant_0.5"]
    write_summary(run, s)
    rows = _md_rows((run / "summary.md").read_text())
    assert all(DAGGER not in c for c in rows["ideal_twin"][3:])
    assert all(DAGGER not in c for c in rows["ideal"][3:])
    assert DAGGER in rows["constant_0.5"][3]  # mean_f1
    assert "\\dagger" in (run / "summary.tex").read_text()


def test_paired_bootstrap_analytic_cases_and_slow_reference():
    b = 2000
    same = paired_bootstrap([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], n_boot=b)
    assert same["p"] == 1.0 and same["diff"] == 0.0
    pos = paired_bootstrap([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 1.5], n_boot=b)
    assert pos["p"] == pytest.approx(2 / (b + 1))  # no resample mean is <= 0
    assert pos["diff"] == pytest.approx(1.75) and pos["ci_low"] <= 1.75 <= pos["ci_high"]
    sym = paired_bootstrap([1.0, -1.0] * 10, [0.0] * 20, n_boot=b)
    assert sym["p"] > 0.5 and not sym["p"] < 0.05
    nan = paired_bootstrap([1.0, math.nan, 3.0], [0.0, 1.0, None], n_boot=b)
    assert nan["n"] == 1 and math.isnan(nan["p"])  # one pair left: no test
    # slow reference: the bootstrap distribution's sign fractions, by explicit loops
    rng = random.Random(3)
    a = [rng.gauss(0.1, 1.0) for _ in range(15)]
    c = [rng.gauss(0.0, 1.0) for _ in range(15)]
    fast = paired_bootstrap(a, c, n_boot=4000, seed=1)
    d = [x - y for x, y in zip(a, c)]
    le = ge = 0
    r2 = random.Random(7)
    for _ in range(4000):
        m = sum(d[r2.randrange(len(d))] for _ in range(len(d))) / len(d)
        le += m <= 0
        ge += m >= 0
    slow_p = min(1.0, 2 * min(le + 1, ge + 1) / 4001)
    assert fast["diff"] == pytest.approx(sum(d) / len(d))
    assert fast["p"] == pytest.approx(slow_p, abs=0.05)  # two independent Monte-Carlo draws


def test_wilcoxon_exact_small_case():
    # 8 differences, all positive and distinct: exact two-sided p = 2 / 2^8
    r = paired_wilcoxon([float(i) for i in range(1, 9)], [0.0] * 8)
    assert r["p"] == pytest.approx(2 / 256)
    assert paired_wilcoxon([0.3] * 5, [0.3] * 5)["p"] == 1.0


def test_failures_and_reference_choice(tmp_path):
    run = copy_run(tmp_path)
    with open(run / "scores.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "image_id": "999",
                    "method": "center",
                    "status": "failed",
                    "error": "ValueError: boom",
                    "scores": {},
                }
            )
            + "\n"
        )
    s = summarize(run, METHODS, METRICS, reference="center")
    write_summary(run, s)
    md = (run / "summary.md").read_text()
    rows = _md_rows(md)
    assert rows["center"][2] == "1" and rows["ideal"][2] == "0"
    assert "`center`: ValueError (1)" in md
    assert "center (*ref*)" in md
    with pytest.raises(ValueError, match="reference method 'explainer' is not in the run"):
        summarize(run, METHODS, METRICS, reference="explainer")
    with pytest.raises(ValueError, match="test must be one of"):
        summarize(run, METHODS, METRICS, test="t-test")


def test_latex_escapes_names():
    s = _fake_summary({"my_method&co": {"a_b%": 0.5}}, {"a_b%": True})
    tex = render_latex(s)
    assert "my\\_method\\&co" in tex and "a\\_b\\% $\\uparrow$" in tex


def test_bootstrap_ci_is_about_the_metric_own_summary_value():
    """Per-class metrics (the pointing game's mean of per-class accuracies) and the median
    time: the interval is the bootstrap of that statistic, so it brackets the value shown; the
    mean of the per-image values would not (here 0.9 against a per-class mean of 0.5)."""
    from attrbench.catalog import METRICS
    from attrbench.stats import bootstrap_ci, bootstrap_ci_of

    pg = METRICS.get("pointing_game")
    # class 0: 90 images, all hits; class 1: 10 images, all misses
    values = [{0: 1.0}] * 90 + [{1: 0.0}] * 10
    value = pg.aggregate(values)
    assert value == 0.5
    lo, hi = bootstrap_ci_of(pg.aggregate, values)
    assert lo <= value <= hi
    img_lo, img_hi = bootstrap_ci([pg.image_value(v) for v in values])
    assert not img_lo <= value <= img_hi  # the old interval missed the value
