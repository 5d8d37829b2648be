"""The Python API (attrbench.run, attrbench.load_run): same configuration rules as the CLI, tidy
results."""

from __future__ import annotations

import json
import math
import shutil

import pytest

import attrbench
from attrbench.config import ConfigError
from attrbench.registry import RegistryError

ARGS = {"methods": ["gradcam", "center"], "metrics": "mean_f1,pointing_game,time_ms",
        "limit": 4, "progress": False, "report": False}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return attrbench.run(out=tmp_path_factory.mktemp("api") / "r", **ARGS)


def test_run_returns_tidy_summary_matching_summary_json(result):
    s = result.summary
    assert list(s.columns) == ["method", "metric", "value", "ci_low", "ci_high", "n", "failed",
                               "higher_is_better", "kind"]
    assert len(s) == 2 * 3
    raw = json.loads((result.path / "summary.json").read_text())
    for row in s.itertuples():
        cell = raw["results"][row.method]["metrics"][row.metric]
        assert row.value == pytest.approx(cell["value"]) and row.n == cell["n"]
        assert row.kind == ("cost" if row.metric == "time_ms" else "quality")
    assert set(s.loc[s.metric == "time_ms", "higher_is_better"]) == {False}


def test_scores_are_per_image_with_per_class_values_reduced(result):
    sc = result.scores
    assert len(sc) == 8 and set(sc.method) == {"gradcam", "center"}
    rows = [json.loads(x) for x in (result.path / "scores.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["method"] == "gradcam")
    pg = first["scores"]["pointing_game"]  # a per-class dict {class: hit}
    want = sum(pg.values()) / len(pg)
    got = sc[(sc.method == "gradcam") & (sc.image_id == first["image_id"])].pointing_game.item()
    assert got == pytest.approx(want)
    # the mean of the per-image mean_f1 values is the summary value
    mean = sc[sc.method == "center"].mean_f1.mean()
    assert mean == pytest.approx(result.summary.query(
        "method == 'center' and metric == 'mean_f1'").value.item())


def test_config_table_timings_and_report(result):
    assert set(result.config["methods"]) == {"gradcam", "center"}
    assert result.environment["device"] == "cpu"
    assert result.timings["total_s"] > 0 and set(result.timings["methods_s"]) == {"gradcam",
                                                                                  "center"}
    # every classifier row of the run: Grad-CAM's forward and backward of each (image, class)
    # pair (its warm-up on one image included); center never calls the classifier
    rows = result.timings["classifier_rows"]
    lines = (result.path / "scores.jsonl").read_text().splitlines()
    pairs = sum(len(r["classes"]) for r in map(json.loads, lines) if r["method"] == "gradcam")
    assert rows["backward_rows"] >= pairs and rows["forward_rows"] >= pairs
    assert "mean_f1" in result.table() and "gini" not in result.table()
    path = result.report()
    assert path.name == "report.html" and path.exists()


def test_load_run_reads_a_finished_and_an_interrupted_folder(result, tmp_path):
    again = attrbench.load_run(result.path)
    assert again.summary.equals(result.summary)
    cut = tmp_path / "cut"
    shutil.copytree(result.path, cut)
    (cut / "summary.json").unlink()  # interrupted before the summary: computed from the rows
    partial = attrbench.load_run(cut)
    assert partial.summary[["method", "metric", "value"]].equals(
        result.summary[["method", "metric", "value"]])
    with pytest.raises(FileNotFoundError, match="not an attrbench run folder"):
        attrbench.load_run(tmp_path / "nothing")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"limit": 0}, ConfigError, "--limit must be a positive integer"),
    ({"metods": ["gradcam"]}, ConfigError, "unknown option"),
    ({"methods": ["gradkam"]}, RegistryError, "gradcam"),
    ({"methods": ["gradcam"], "method_options": {"rise": {"num_masks": 1}}}, ConfigError,
     "not one of this run's methods"),
])
def test_same_errors_as_the_cli_before_any_work(tmp_path, kwargs, error, message):
    out = tmp_path / "never"
    with pytest.raises(error, match=message):
        attrbench.run(out=out, progress=False, report=False, **kwargs)
    assert not out.exists()


def test_api_and_cli_give_the_same_rows(result, tmp_path):
    from attrbench.cli import main

    out = tmp_path / "cli"
    assert main(["run", "--methods", "gradcam,center", "--metrics",
                 "mean_f1,pointing_game,time_ms", "--limit", "4", "--out", str(out),
                 "--no-progress", "--no-report"]) == 0
    cli = attrbench.load_run(out).scores.drop(columns=["time_ms"])
    api = result.scores.drop(columns=["time_ms"])
    assert cli.equals(api)
    assert not any(math.isnan(v) for v in api.mean_f1)


def test_top_level_names_are_lazy_and_documented():
    assert attrbench.run.__module__ == "attrbench.api" and attrbench.run.__doc__
    assert attrbench.load_run.__doc__ and attrbench.RunConfig.__name__ == "RunConfig"
    assert {"run", "load_run", "RunResult", "RunConfig"} <= set(attrbench.__all__)
