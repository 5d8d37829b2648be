"""The regression gate (attrbench.compare): every rule has a test that fails it on purpose.

Rules: (a) new failures or undefined values, (b) a changed image count, (c) a changed method or
metric option or metric version (configuration diff), (d) a value outside its metric's own
tolerance (absolute, relative or in flips); cost metrics are reported only.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
from report_runs import CLASSES, METHODS, METRICS, base_run

from attrbench.catalog import METRICS as REGISTRY
from attrbench.compare import (
    _main,
    compare,
    compare_main,
    load_baseline,
    make_baseline,
    parse_tolerances,
    run_config,
)
from attrbench.interfaces import Metric, Tolerance


@pytest.fixture()
def baseline(tmp_path) -> Path:
    return make_baseline(base_run(), tmp_path / "baselines" / "synthetic.json")


@pytest.fixture()
def run(tmp_path) -> Path:
    """A copy of the shared run that a test may edit."""
    out = tmp_path / "run"
    shutil.copytree(base_run(), out)
    return out


def _edit_json(path: Path, fn, out: Path | None = None) -> Path:
    d = json.loads(path.read_text())
    fn(d)
    out = out or path
    out.write_text(json.dumps(d))
    return out


def _edit_baseline(path: Path, fn) -> Path:
    return _edit_json(path, fn, path.with_name("edited.json"))


def _gate(baseline: Path, run: Path, capsys, *tol: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = compare_main(baseline, run, list(tol))
    return rc, capsys.readouterr().out


def _value(d, method, metric):
    return d["results"][method]["metrics"][metric]


# ------------------------------------------------------------------------------ format
def test_baseline_format_records_source_config_and_tolerances(baseline):
    d = json.loads(baseline.read_text())
    assert d["format"] == "attrbench-baseline" and d["schema"] == 2
    assert d["methods"] == METHODS and list(d["metrics"]) == METRICS
    assert d["metrics"]["mean_f1"] == {
        "version": 1, "higher_is_better": True, "kind": "quality",
        "tolerance": {"kind": "absolute", "value": 0.01},
        "definition": d["metrics"]["mean_f1"]["definition"],
    }
    assert d["metrics"]["pointing_game"]["tolerance"] == {"kind": "flips", "value": 2}
    assert d["metrics"]["time_ms"]["kind"] == "cost"
    assert d["metrics"]["time_ms"]["tolerance"] is None
    assert _value(d, "ideal", "mean_f1")["value"] == pytest.approx(1.0)
    src = d["source"]
    assert src["limit"] == 8 and src["environment"]["torch"]
    # the commit and the state of the working tree that produced the numbers
    assert set(src["git"]) == {"commit", "clean"}
    assert src["git"]["commit"] is None or len(src["git"]["commit"]) == 40
    assert src["git"]["clean"] in (True, False, None)
    # no absolute path of this machine
    assert not Path(src["run_dir"]).is_absolute()
    cfg = d["config"]
    assert cfg["run"]["limit"] == 8 and cfg["run"]["classes"] == CLASSES
    assert cfg["run"]["classifier"]["fingerprint"]
    assert cfg["methods"]["center"] == {"class": "attrbench.methods.sanity.Center",
                                        "options": {"sigma": 0.25}}
    assert cfg["metrics"]["pointing_game"]["version"] == 2
    assert cfg["metrics"]["pointing_game"]["options"]["tolerance"] == pytest.approx(15 * 64 / 224)


def test_run_against_itself_passes(baseline, capsys):
    rc, out = _gate(baseline, base_run(), capsys)
    assert rc == 0, out
    assert "OK:" in out and "FAIL" not in out
    for col in ("baseline", "current", "delta", "tolerance", "status"):
        assert col in out.splitlines()[0]
    # a run folder works as a baseline too
    assert compare_main(base_run(), base_run(), []) == 0


# ------------------------------------------------------------------------------ rule (a)
def test_a_new_failures_fail_even_when_values_stay_within_tolerance(baseline, run, capsys):
    """The case the old gate let through: a method fails on 3 of 8 images and its values move by
    less than their tolerance."""

    def fail_three(d):
        r = d["results"]["center"]
        r.update(n_images=5, n_failed=3, failures={"method raised RuntimeError": 3})
        for k in ("mean_f1", "cont_iou", "auc"):
            r["metrics"][k]["value"] -= 0.005
            r["metrics"][k]["n"] = 5

    _edit_json(run / "summary.json", fail_three)
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1
    assert "failures: center: 3 failed images (baseline: 0)" in out
    assert "method raised RuntimeError: 0 -> 3" in out
    assert "failure counts changed: center" in out
    assert "REGRESSION" not in out  # the values alone would pass


def test_a_metric_errors_and_undefined_values_fail(baseline, run, capsys):
    _edit_json(run / "summary.json", lambda d: d["results"]["random"].update(
        metric_errors={"metric auc raised ValueError": 1}))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1 and "metric auc raised ValueError: 0 -> 1" in out

    # undefined on more images, the mean of the rest unchanged
    shutil.copy(base_run() / "summary.json", run / "summary.json")
    _edit_json(run / "summary.json", lambda d: _value(d, "center", "cont_iou").update(
        n_undefined=2, n=6))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1 and "center/cont_iou (UNDEFINED)" in out
    assert "undefined on 2 images (baseline: 0)" in out

    # a value that became undefined, and one that became defined
    undefined = _edit_baseline(baseline, lambda d: _value(d, "center", "auc").update(value=None))
    rc, out = _gate(undefined, base_run(), capsys)
    assert rc == 1 and "center/auc (NOW DEFINED)" in out
    shutil.copy(base_run() / "summary.json", run / "summary.json")
    _edit_json(run / "summary.json", lambda d: _value(d, "ideal", "mean_f1").update(value=None))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1 and "ideal/mean_f1 (UNDEFINED)" in out


# ------------------------------------------------------------------------------ rule (b)
def test_b_a_changed_image_count_fails(baseline, tmp_path, capsys):
    """A real run on 6 instead of 8 images (with the same classifier and methods)."""
    from attrbench.runner import RunConfig, run

    cfg = json.loads((base_run() / "config.json").read_text())["config"]
    out = run(RunConfig(methods=METHODS, metrics=METRICS, limit=6, out=str(tmp_path / "six"),
                        progress=False, report=False, model="synthetic_cnn",
                        checkpoint=str(base_run().parent / "random_cls.pt")))
    assert json.loads((out / "config.json").read_text())["config"]["classifier"][
        "fingerprint"] == cfg["classifier"]["fingerprint"]
    rc, printed = _gate(baseline, out, capsys)
    assert rc == 1
    for m in METHODS:
        assert f"images: {m}: the run evaluated 6 images, the baseline 8" in printed
    assert "run.limit: 8 -> 6" in printed  # and the configuration diff says why


# ------------------------------------------------------------------------------ rule (c)
def test_c_changed_method_option_fails_with_a_config_diff(baseline, run, capsys):
    _edit_json(run / "config.json",
               lambda d: d["config"]["methods"]["center"]["options"].update(sigma=0.3))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1
    assert "Configuration diff (baseline -> run):" in out
    assert "methods.center.options.sigma: 0.25 -> 0.3" in out
    assert "configuration changed: methods.center.options.sigma" in out
    assert "REGRESSION" not in out and "CHANGED" not in out.split("Configuration diff")[0]


def test_c_changed_metric_option_fails(baseline, run, capsys):
    _edit_json(run / "config.json", lambda d: d["config"]["metrics"]["pointing_game"][
        "options"].update(tolerance=15.0, use_boxes=True))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1
    assert "metrics.pointing_game.options.tolerance: 4.285714285714286 -> 15.0" in out
    assert "metrics.pointing_game.options.use_boxes" in out  # an option the baseline lacks


def test_c_changed_metric_version_fails(baseline, capsys):
    bumped = _edit_baseline(baseline, lambda d: (d["metrics"]["auc"].update(version=0),
                                                 d["config"]["metrics"]["auc"].update(version=0)))
    rc, out = _gate(bumped, base_run(), capsys)
    assert rc == 1
    assert "ideal/auc (DEFINITION CHANGED)" in out and "metrics.auc.version: 0 -> 1" in out
    assert "refresh the baseline" in out
    # a definition change is not hidden by a loose tolerance
    assert compare_main(bumped, base_run(), ["auc=1"]) == 1


def test_c_a_changed_classifier_or_seed_fails_and_a_missing_config_too(baseline, run, capsys):
    _edit_json(run / "config.json", lambda d: (
        d["config"]["classifier"].update(fingerprint="0" * 16), d["config"].update(seed=1)))
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1
    assert "run.classifier.fingerprint" in out and "run.seed: 0 -> 1" in out
    # the machine-specific environment is not part of the configuration
    shutil.copy(base_run() / "config.json", run / "config.json")
    _edit_json(run / "config.json", lambda d: d["environment"].update(torch="0.0", git="f" * 40))
    assert _gate(baseline, run, capsys)[0] == 0
    # without config.json the options cannot be checked: that fails too
    (run / "config.json").unlink()
    rc, out = _gate(baseline, run, capsys)
    assert rc == 1 and "cannot be checked" in out


# ------------------------------------------------------------------------------ rule (d)
def test_d_absolute_tolerance(baseline, capsys):
    d0 = json.loads(baseline.read_text())
    v = _value(d0, "center", "cont_iou")["value"]
    bad = _edit_baseline(baseline, lambda d: _value(d, "center", "cont_iou").update(
        value=v + 0.0105))
    rc, out = _gate(bad, base_run(), capsys)
    assert rc == 1 and "center/cont_iou (REGRESSION)" in out
    line = next(li for li in out.splitlines() if li.startswith("center") and "cont_iou" in li)
    assert "-0.0105" in line and "±0.01" in line
    ok = _edit_baseline(baseline, lambda d: _value(d, "center", "cont_iou").update(
        value=v + 0.0095))
    assert _gate(ok, base_run(), capsys)[0] == 0
    # an improvement beyond tolerance fails too, as CHANGED
    a = _value(d0, "random", "auc")["value"]
    better = _edit_baseline(baseline, lambda d: _value(d, "random", "auc").update(value=a - 0.05))
    rc, out = _gate(better, base_run(), capsys)
    assert rc == 1 and "random/auc (CHANGED)" in out


def test_d_flips_tolerance_of_the_pointing_game(baseline, capsys):
    """Two flips of n = 8 scored images: 0.25 may move, more may not."""
    d0 = json.loads(baseline.read_text())
    cell = _value(d0, "center", "pointing_game")
    assert cell["n"] == 8
    v = cell["value"]
    sign = -1 if v > 0.5 else 1  # stay inside [0, 1]
    within = _edit_baseline(baseline, lambda d: _value(d, "center", "pointing_game").update(
        value=v + sign * 0.24))
    rc, out = _gate(within, base_run(), capsys)
    assert rc == 0, out
    line = next(li for li in out.splitlines() if li.startswith("center") and "pointing" in li)
    assert "±0.2500 (2 flips)" in line
    beyond = _edit_baseline(baseline, lambda d: _value(d, "center", "pointing_game").update(
        value=v + sign * 0.26))
    rc, out = _gate(beyond, base_run(), capsys)
    assert rc == 1 and "center/pointing_game" in out


def _fake(metric: str, value: float, n: int = 100) -> dict:
    return {"methods": ["m"],
            "metrics": {metric: {"version": REGISTRY.get(metric).version,
                                 "higher_is_better": REGISTRY.get(metric).higher_is_better}},
            "results": {"m": {"n_images": n, "n_failed": 0, "metrics": {
                metric: {"value": value, "n": n, "n_undefined": 0}}}}}


@pytest.mark.parametrize("metric,base,ok,bad", [
    # relative 5 % with a floor of 0.002: a small value gets a small band...
    ("area", 0.026, 0.0275, 0.0285),
    ("area", 0.6, 0.629, 0.631),
    # ...and a value of 0 the floor
    ("background_coverage", 0.0, 0.0019, 0.0021),
    # entropy: relative 0.5 %
    ("entropy", 8.0, 8.039, 8.041),
    # flips: 2 of 100 images
    ("pointing_game", 0.5, 0.519, 0.521),
])
def test_d_relative_and_flips_tolerances(metric, base, ok, bad):
    cfg = {"run": {}, "methods": {}, "metrics": {}}
    baseline = {**_fake(metric, base), "config": cfg}
    assert not compare(baseline, _fake(metric, ok), cfg).failed
    res = compare(baseline, _fake(metric, bad), cfg)
    assert res.failed and res.entries[0]["status"] in ("REGRESSION", "CHANGED")


def test_cost_metrics_are_reported_only(baseline, capsys):
    slow = _edit_baseline(baseline, lambda d: [
        _value(d, m, k).update(value=1e6) for m in METHODS for k in ("time_ms", "model_calls")])
    rc, out = _gate(slow, base_run(), capsys, "time_ms=0")
    assert rc == 0, out
    assert "report only" in out


def test_tolerance_override_in_the_metrics_own_unit(baseline, capsys):
    d0 = json.loads(baseline.read_text())
    v = _value(d0, "center", "mean_f1")["value"]
    bad = _edit_baseline(baseline, lambda d: _value(d, "center", "mean_f1").update(value=v + 0.05))
    assert _gate(bad, base_run(), capsys)[0] == 1
    assert _gate(bad, base_run(), capsys, "mean_f1=0.06")[0] == 0
    assert _gate(bad, base_run(), capsys, "mean_f1=none")[0] == 0
    assert _gate(bad, base_run(), capsys, "cont_iou=0.5")[0] == 1
    assert parse_tolerances(["a=0.1", "b = none"]) == {"a": 0.1, "b": None}
    for item, msg in [("mean_f1", "METRIC=VALUE"), ("mean_f1=abc", "non-negative number"),
                      ("mean_f1=-1", "non-negative")]:
        with pytest.raises(ValueError, match=msg):
            compare_main(baseline, base_run(), [item])
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['mean_f2'\]"):
        compare_main(baseline, base_run(), ["mean_f2=0.1"])


def test_missing_and_new_methods_and_metrics(baseline, capsys):
    extra = _edit_baseline(baseline, lambda d: (
        d["methods"].append("gradcam"),
        d["results"].update(gradcam={"n_images": 8, "n_failed": 0,
                                     "metrics": {k: {"value": 0.5} for k in METRICS}})))
    rc, out = _gate(extra, base_run(), capsys)
    assert rc == 1
    assert "gradcam/mean_f1 (MISSING)" in out and "method 'gradcam' is not in the run" in out
    fewer = _edit_baseline(baseline, lambda d: (
        d["methods"].remove("random"), d["results"].pop("random"), d["metrics"].pop("auc"),
        d["config"]["methods"].pop("random"), d["config"]["metrics"].pop("auc")))
    rc, out = _gate(fewer, base_run(), capsys)
    assert rc == 0, out
    assert "method not in the baseline" in out and "metric not in the baseline" in out
    gone = _edit_baseline(baseline, lambda d: d["metrics"].update(iou_mean={
        "version": 1, "higher_is_better": True, "kind": "quality",
        "tolerance": {"kind": "absolute", "value": 0.01}}))
    rc, out = _gate(gone, base_run(), capsys)
    assert rc == 1 and "metric 'iou_mean' is not in the run" in out


# ------------------------------------------------------------------------------ tolerances
def test_every_metric_declares_its_kind_and_tolerance():
    """Tolerances live with the metrics: each registered metric's class (or its family base in
    metrics/) sets them; none relies on the generic default of Metric."""
    for name in REGISTRY.names():
        cls = REGISTRY.get(name)
        reg = cls.regression()
        owners = [c for c in cls.__mro__ if "regression_tolerance" in c.__dict__]
        assert owners[0] is not Metric, f"{name} does not declare its tolerance"
        if reg["kind"] == "cost":
            assert reg["tolerance"] is None, name
        else:
            assert isinstance(cls.regression_tolerance, Tolerance), name
    assert REGISTRY.get("pointing_game").regression_tolerance.kind == "flips"
    cost = {n for n in REGISTRY.names() if REGISTRY.get(n).kind == "cost"}
    assert cost == {"time_ms", "model_calls", "peak_mem_mb"}
    # the tables read the cost metrics (no paired tests) from the summary's declared kinds
    from attrbench.tables import cost_metrics

    summary = {"metrics": {n: REGISTRY.get(n).regression() for n in REGISTRY.names()}}
    assert cost_metrics(summary) == cost


def test_tolerance_checks_its_arguments():
    assert Tolerance("absolute", 0.01).allowed(123.0) == 0.01
    assert Tolerance("relative", 0.1).allowed(-2.0) == pytest.approx(0.2)
    assert Tolerance("relative", 0.1, floor=0.5).allowed(1.0) == 0.5
    assert Tolerance("flips", 3).allowed(0.5, n=60) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="kind must be one of"):
        Tolerance("percent", 1)
    with pytest.raises(ValueError, match="value must be a finite number >= 0"):
        Tolerance("absolute", -1)
    with pytest.raises(ValueError, match="floor only applies to relative"):
        Tolerance("absolute", 0.1, floor=0.1)
    with pytest.raises(ValueError, match="needs the number of scored images"):
        Tolerance("flips", 1).allowed(0.5, n=0)
    assert Tolerance.from_dict(Tolerance("relative", 0.05, 0.002).to_dict()) == Tolerance(
        "relative", 0.05, 0.002)

    class Bad(Metric):
        name = "bad"
        kind = "cost"

    with pytest.raises(ValueError, match="a cost metric has tolerance None"):
        Bad.regression()


# ------------------------------------------------------------------------------ CLI
def test_cli_compare_exit_codes(baseline, tmp_path, capsys):
    from attrbench.cli import main

    run = base_run()
    assert main(["compare", str(baseline), str(run)]) == 0
    bad = _edit_baseline(baseline, lambda d: _value(d, "ideal", "mean_f1").update(value=0.5))
    assert main(["compare", str(bad), str(run)]) == 1
    assert main(["compare", str(bad), str(run), "--tolerance", "mean_f1=0.6"]) == 0
    assert main(["compare", str(bad), str(run), "--tolerance", "oops"]) == 2
    assert main(["compare", str(tmp_path / "none.json"), str(run)]) == 2
    old = _edit_baseline(baseline, lambda d: d.update(schema=1))
    assert main(["compare", str(old), str(run)]) == 2
    assert "schema 1" in capsys.readouterr().err
    # python -m attrbench.compare make-baseline
    out = tmp_path / "b2.json"
    assert _main(["make-baseline", str(run), str(out)]) == 0
    assert load_baseline(out)["config"] == run_config(json.loads((run / "config.json").read_text()))
    assert _main(["make-baseline", str(tmp_path / "nope"), str(out)]) == 2


def test_compare_result_is_independent_of_input_objects(baseline):
    """compare() does not modify its inputs."""
    b = load_baseline(baseline)
    s = json.loads((base_run() / "summary.json").read_text())
    cfg = run_config(json.loads((base_run() / "config.json").read_text()))
    b0, s0, c0 = copy.deepcopy(b), copy.deepcopy(s), copy.deepcopy(cfg)
    res = compare(b, s, cfg)
    assert not res.failed and b == b0 and s == s0 and cfg == c0
    assert all(math.isfinite(e["baseline"]) or e["status"] in ("ok", "info")
               for e in res.entries)
