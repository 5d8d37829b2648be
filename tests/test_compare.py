"""CI regression on metric values (attrbench.compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_runs import METHODS, METRICS, base_run

from attrbench.compare import (
    _main,
    compare_main,
    default_tolerance,
    load_baseline,
    make_baseline,
    parse_tolerances,
)


@pytest.fixture()
def baseline(tmp_path) -> Path:
    return make_baseline(base_run(), tmp_path / "baselines" / "synthetic.json")


def _edit(path: Path, fn) -> Path:
    d = json.loads(path.read_text())
    fn(d)
    out = path.with_name("edited.json")
    out.write_text(json.dumps(d))
    return out


def test_baseline_format(baseline):
    d = json.loads(baseline.read_text())
    assert d["format"] == "attrbench-baseline" and d["schema"] == 1
    assert d["methods"] == METHODS and list(d["metrics"]) == METRICS
    assert d["metrics"]["mean_f1"] == {
        **d["metrics"]["mean_f1"],
        "version": 1,
        "higher_is_better": True,
        "tolerance": 0.02,
        "cost": False,
    }
    assert d["metrics"]["time_ms"]["tolerance"] is None and d["metrics"]["time_ms"]["cost"]
    assert d["results"]["ideal"]["metrics"]["mean_f1"]["value"] == pytest.approx(1.0)
    assert d["source"]["limit"] == 8 and d["source"]["environment"]["torch"]


def test_run_against_itself_passes(baseline, capsys):
    assert compare_main(baseline, base_run(), None) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "FAIL" not in out
    for col in ("baseline", "current", "delta", "tolerance", "status"):
        assert col in out.splitlines()[0]
    # a summary.json / run folder works as a baseline too (default tolerances)
    assert compare_main(base_run(), base_run(), []) == 0


def test_perturbation_beyond_tolerance_fails_and_names_the_metric(baseline, capsys):
    bad = _edit(
        baseline,
        lambda d: d["results"]["center"]["metrics"]["cont_iou"].update(
            value=d["results"]["center"]["metrics"]["cont_iou"]["value"] + 0.05
        ),
    )
    assert compare_main(bad, base_run(), None) == 1
    out = capsys.readouterr().out
    assert "center/cont_iou (REGRESSION)" in out
    line = next(li for li in out.splitlines() if li.startswith("center") and "cont_iou" in li)
    assert "-0.0500" in line and "±0.02" in line
    # within tolerance: passes; an improvement beyond tolerance fails as CHANGED
    ok = _edit(
        baseline,
        lambda d: d["results"]["center"]["metrics"]["cont_iou"].update(
            value=d["results"]["center"]["metrics"]["cont_iou"]["value"] + 0.015
        ),
    )
    assert compare_main(ok, base_run(), None) == 0
    better = _edit(
        baseline,
        lambda d: d["results"]["random"]["metrics"]["auc"].update(
            value=d["results"]["random"]["metrics"]["auc"]["value"] - 0.1
        ),
    )
    capsys.readouterr()
    assert compare_main(better, base_run(), None) == 1
    assert "random/auc (CHANGED)" in capsys.readouterr().out


def test_tolerance_override(baseline, capsys):
    bad = _edit(
        baseline,
        lambda d: d["results"]["center"]["metrics"]["mean_f1"].update(
            value=d["results"]["center"]["metrics"]["mean_f1"]["value"] + 0.05
        ),
    )
    assert compare_main(bad, base_run(), None) == 1
    assert compare_main(bad, base_run(), ["mean_f1=0.06"]) == 0
    assert compare_main(bad, base_run(), ["*=0.1"]) == 0
    assert compare_main(bad, base_run(), ["mean_f1=none"]) == 0
    assert compare_main(bad, base_run(), ["cont_iou=0.5"]) == 1
    capsys.readouterr()
    assert parse_tolerances(["a=0.1", "b = none"]) == {"a": 0.1, "b": None}
    for item, msg in [
        ("mean_f1", "METRIC=VALUE"),
        ("mean_f1=abc", "non-negative number"),
        ("mean_f1=-1", "non-negative"),
    ]:
        with pytest.raises(ValueError, match=msg):
            compare_main(baseline, base_run(), [item])
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['mean_f2'\]"):
        compare_main(baseline, base_run(), ["mean_f2=0.1"])


def test_metric_version_change_is_a_definition_change(baseline, capsys):
    bumped = _edit(baseline, lambda d: d["metrics"]["auc"].update(version=0))
    assert compare_main(bumped, base_run(), None) == 1
    out = capsys.readouterr().out
    assert "DEFINITION CHANGED" in out and "ideal/auc (DEFINITION CHANGED)" in out
    assert "refresh the baseline" in out
    # a definition change is not hidden by a loose tolerance
    assert compare_main(bumped, base_run(), ["*=1"]) == 1


def test_missing_and_new_methods_and_metrics(baseline, capsys):
    extra = _edit(
        baseline,
        lambda d: (
            d["methods"].append("gradcam"),
            d["results"].update(
                gradcam={
                    "n_images": 8,
                    "n_failed": 0,
                    "metrics": {k: {"value": 0.5} for k in METRICS},
                }
            ),
        ),
    )
    assert compare_main(extra, base_run(), None) == 1
    out = capsys.readouterr().out
    assert "gradcam/mean_f1 (MISSING)" in out and "method 'gradcam' is not in the run" in out
    fewer = _edit(
        baseline,
        lambda d: (
            d["methods"].remove("random"),
            d["results"].pop("random"),
            d["metrics"].pop("auc"),
        ),
    )
    assert compare_main(fewer, base_run(), None) == 0
    out = capsys.readouterr().out
    assert "new" in out and "method not in the baseline" in out
    assert "metric not in the baseline" in out
    gone = _edit(
        baseline,
        lambda d: d["metrics"].update(
            iou_mean={"version": 1, "higher_is_better": True, "tolerance": 0.02, "cost": False}
        ),
    )
    assert compare_main(gone, base_run(), None) == 1
    assert "metric 'iou_mean' is not in the run" in capsys.readouterr().out


def test_cost_metrics_never_fail_and_nan_changes_do(baseline, capsys):
    slow = _edit(
        baseline,
        lambda d: [d["results"][m]["metrics"]["time_ms"].update(value=1e6) for m in METHODS],
    )
    assert compare_main(slow, base_run(), ["*=0"]) == 0
    assert "report only" in capsys.readouterr().out
    assert default_tolerance("time_ms") is None and default_tolerance("peak_mem_mb") is None
    assert default_tolerance("mean_f1") == 0.02
    undefined = _edit(
        baseline, lambda d: d["results"]["center"]["metrics"]["auc"].update(value=None)
    )
    assert compare_main(undefined, base_run(), None) == 1
    assert "center/auc (NOW DEFINED)" in capsys.readouterr().out


def test_cli_compare_exit_codes(baseline, tmp_path, capsys):
    from attrbench.cli import main

    run = base_run()
    assert main(["compare", str(baseline), str(run)]) == 0
    bad = _edit(baseline, lambda d: d["results"]["ideal"]["metrics"]["mean_f1"].update(value=0.5))
    assert main(["compare", str(bad), str(run)]) == 1
    assert main(["compare", str(bad), str(run), "--tolerance", "mean_f1=0.6"]) == 0
    assert main(["compare", str(bad), str(run), "--tolerance", "oops"]) == 2
    assert main(["compare", str(tmp_path / "none.json"), str(run)]) == 2
    capsys.readouterr()
    # python -m attrbench.compare make-baseline
    out = tmp_path / "b2.json"
    assert _main(["make-baseline", str(run), str(out), "--tolerance", "mean_f1=0.05"]) == 0
    assert load_baseline(out)["metrics"]["mean_f1"]["tolerance"] == 0.05
    assert _main(["make-baseline", str(tmp_path / "nope"), str(out)]) == 2
