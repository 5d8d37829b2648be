"""``attrbench table``: joining runs that differ only in the classifier into a paper-style table.

Most tests use small run folders written here (a ``config.json`` and a ``summary.json`` with
chosen values, so that the best cell of each row is known); one joins copies of a real run
(:mod:`report_runs`) to check that real run folders are read and joined.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from attrbench.cli import main
from attrbench.paper_table import ProtocolMismatchError, build_table, load_run, render

METHODS = ["gradcam", "rise", "ideal"]
# metric -> (registered direction ↑, values per method)
VALUES = {
    "mean_f1": {"gradcam": 0.41, "rise": 0.52, "ideal": 1.0},  # ↑: rise (ideal is a sanity row)
    "background_coverage": {"gradcam": 0.20, "rise": 0.35, "ideal": 0.0},  # ↓: gradcam
    "time_ms": {"gradcam": 1.5, "rise": 300.0, "ideal": 0.01},  # cost: no bold
}


def _config(classifier: str = "vgg16") -> dict:
    return {
        "preset": {"name": f"voc2007-{classifier}", "dataset": "voc",
                   "classifier": classifier, "mean": [0.5, 0.5, 0.5]},
        "data_root": f"/data/{classifier}",
        "split": "test", "limit": 3, "seed": 0, "image_size": 224, "num_classes": 20,
        "classes": ["aeroplane", "bicycle"],
        "classifier": {"name": classifier, "checkpoint": f"{classifier}.pt",
                       "fingerprint": f"fp-{classifier}"},
        "methods": {
            "gradcam": {"class": "attrbench.methods.cam.GradCAM",
                        "options": {"layer": f"{classifier}.last", "relu": True}},
            "rise": {"class": "attrbench.methods.rise.RISE",
                     "options": {"num_masks": 8000, "batch_size": 32}},
            "ideal": {"class": "attrbench.methods.sanity.Ideal", "options": {}},
        },
        "metrics": {
            "mean_f1": {"version": 1, "options": {"thresholds": [0.25, 0.5, 0.75]}},
            "background_coverage": {"version": 1, "options": {"batch_size": 256}},
            "time_ms": {"version": 1, "options": {}},
        },
    }


def _summary(values: dict, n_images: int = 3) -> dict:
    metrics = {k: {"higher_is_better": k == "mean_f1", "version": 1, "definition": k,
                   "cost": k == "time_ms"} for k in values}
    # a run written by older code may record another direction: the registry's is used
    metrics["background_coverage"]["higher_is_better"] = True
    results = {}
    for m in METHODS:
        results[m] = {"n_images": n_images, "n_failed": 0, "metrics": {
            k: {"value": v[m], "ci_low": v[m] - 0.05, "ci_high": v[m] + 0.05, "n": n_images}
            for k, v in values.items()}}
    # as summarize writes it: the methods that declare themselves sanity rows
    return {"methods": list(METHODS), "metrics": metrics, "results": results,
            "sanity_methods": ["ideal"]}


def make_run(root: Path, classifier: str = "vgg16", values: dict | None = None,
             config: dict | None = None, n_images: int = 3) -> Path:
    root.mkdir(parents=True)
    cfg = config or _config(classifier)
    (root / "config.json").write_text(json.dumps({"schema": 1, "config": cfg}))
    (root / "summary.json").write_text(json.dumps(_summary(values or VALUES, n_images)))
    return root


def _md_rows(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in rows]


# ------------------------------------------------------------------------------- joining
def test_joins_two_runs_that_differ_only_in_the_classifier(tmp_path):
    vgg = make_run(tmp_path / "vgg")
    other = copy.deepcopy(VALUES)
    other["mean_f1"] = {"gradcam": 0.61, "rise": 0.33, "ideal": 1.0}
    res = make_run(tmp_path / "res", "resnet50", values=other)
    table = build_table([load_run(vgg), load_run(res)])
    assert table.classifiers == ["vgg16", "resnet50"]
    assert [(r["metric"], r["classifier"]) for r in table.rows] == [
        (k, c) for k in VALUES for c in ("vgg16", "resnet50")]
    rows = _md_rows(render(table, "md"))
    assert rows[0] == ["metric", "classifier", "gradcam", "rise", "ideal"]
    assert rows[2] == ["mean_f1 ↑", "vgg16", "0.410", "**0.520**", "1.000"]
    assert rows[3] == ["", "resnet50", "**0.610**", "0.330", "1.000"]


def test_joins_copies_of_a_real_run(tmp_path):
    from report_runs import METRICS, base_run

    a = tmp_path / "a"
    shutil.copytree(base_run(), a)
    b = tmp_path / "b"
    shutil.copytree(base_run(), b)
    cfg = json.loads((b / "config.json").read_text())
    cfg["config"]["classifier"].update(name="resnet50", checkpoint="other.pt",
                                       fingerprint="0123456789abcdef")
    (b / "config.json").write_text(json.dumps(cfg))
    summary = json.loads((b / "summary.json").read_text())
    summary["results"]["center"]["metrics"]["mean_f1"]["value"] = 0.987654
    (b / "summary.json").write_text(json.dumps(summary))
    table = build_table([load_run(a), load_run(b)], ci=True)
    assert len(table.rows) == 2 * len(METRICS)
    assert table.classifiers == ["synthetic_cnn", "resnet50"]
    rows = _md_rows(render(table, "md"))
    assert rows[0] == ["metric", "classifier", "ideal", "center", "random", "constant_0.5"]
    assert rows[3][:2] == ["", "resnet50"]
    assert rows[3][3].startswith("0.988 ± ")  # the second run's value, with its CI
    assert rows[2][3] != rows[3][3]


def test_one_run_has_one_row_per_metric(tmp_path):
    table = build_table([load_run(make_run(tmp_path / "r"))])
    rows = _md_rows(render(table, "md"))
    assert rows[0] == ["metric", "gradcam", "rise", "ideal"]
    assert [r[0] for r in rows[2:]] == ["mean_f1 ↑", "background_coverage ↓", "time_ms ↓"]


def test_same_classifier_twice_is_told_apart_by_folder(tmp_path):
    table = build_table([load_run(make_run(tmp_path / "ck1")),
                         load_run(make_run(tmp_path / "ck2"))])
    assert table.classifiers == ["vgg16 (ck1)", "vgg16 (ck2)"]


# ------------------------------------------------------------------------------- refusing
@pytest.mark.parametrize("change,key,old,new", [
    (lambda c: c["metrics"]["mean_f1"]["options"].update(thresholds=[0.5]),
     "metrics.mean_f1.options.thresholds", "[0.25, 0.5, 0.75]", "[0.5]"),
    (lambda c: c["metrics"]["mean_f1"].update(version=2), "metrics.mean_f1.version", "1", "2"),
    (lambda c: c["methods"]["rise"]["options"].update(num_masks=500),
     "methods.rise.options.num_masks", "8000", "500"),
    (lambda c: c.update(split="val"), "split", '"test"', '"val"'),
    (lambda c: c.update(limit=None), "limit", "3", "null"),
    (lambda c: c["preset"].update(dataset="coco"), "dataset", '"voc"', '"coco"'),
])
def test_refuses_another_protocol_naming_the_option(tmp_path, change, key, old, new):
    a = make_run(tmp_path / "a")
    cfg = _config("resnet50")
    change(cfg)
    b = make_run(tmp_path / "b", "resnet50", config=cfg)
    with pytest.raises(ProtocolMismatchError) as exc:
        build_table([load_run(a), load_run(b)])
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"differ in {key}: {old} in {a} vs {new} in {b}" in msg


def test_refuses_another_image_count(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", "resnet50", n_images=2)
    with pytest.raises(ProtocolMismatchError, match="images evaluated: 3 in .* vs 2 in"):
        build_table([load_run(a), load_run(b)])


def test_only_shown_metrics_and_methods_are_compared(tmp_path):
    a = make_run(tmp_path / "a")
    cfg = _config("resnet50")
    cfg["metrics"]["background_coverage"]["options"]["steps"] = 16
    cfg["methods"]["rise"]["options"]["num_masks"] = 500
    b = make_run(tmp_path / "b", "resnet50", config=cfg)
    table = build_table([load_run(a), load_run(b)], metrics="mean_f1", methods="gradcam,ideal")
    assert table.methods == ["gradcam", "ideal"]
    assert [r["metric"] for r in table.rows] == ["mean_f1", "mean_f1"]


def test_classifier_bound_and_execution_options_may_differ(tmp_path):
    """The CAM layer, checkpoints, preset name, normalisation, data folder and batch sizes
    belong to the classifier or to the execution, not to the protocol."""
    a = make_run(tmp_path / "a")
    cfg = _config("resnet50")
    cfg["preset"]["mean"] = [0.1, 0.2, 0.3]
    cfg["methods"]["rise"]["options"]["batch_size"] = 8
    cfg["metrics"]["background_coverage"]["options"]["batch_size"] = 16
    cfg["methods"]["gradcam"]["options"]["checkpoint"] = "x.pt"
    assert cfg["methods"]["gradcam"]["options"]["layer"] != (
        _config()["methods"]["gradcam"]["options"]["layer"])
    b = make_run(tmp_path / "b", "resnet50", config=cfg)
    assert len(build_table([load_run(a), load_run(b)]).rows) == 6


# ------------------------------------------------------------------------------- best values
def test_bold_best_follows_the_registered_direction(tmp_path):
    table = build_table([load_run(make_run(tmp_path / "r"))])
    best = {r["metric"]: [m for m, c in r["cells"].items() if c["best"]] for r in table.rows}
    # mean_f1 ↑: the highest non-sanity value; background_coverage ↓ in the registry although
    # the run's summary says ↑; time_ms is a cost metric: no best
    assert best == {"mean_f1": ["rise"], "background_coverage": ["gradcam"], "time_ms": []}
    md = render(table, "md")
    assert "**0.200**" in md and "**0.350**" not in md
    assert "**" not in next(line for line in md.splitlines() if line.startswith("| time_ms"))


def test_ties_all_bold_and_sanity_rows_win_only_alone(tmp_path):
    values = copy.deepcopy(VALUES)
    values["mean_f1"] = {"gradcam": 0.5, "rise": 0.5, "ideal": 1.0}
    table = build_table([load_run(make_run(tmp_path / "r", values=values))])
    assert [m for m, c in table.rows[0]["cells"].items() if c["best"]] == ["gradcam", "rise"]
    alone = build_table([load_run(make_run(tmp_path / "s", values=values))], methods="ideal")
    assert alone.rows[0]["cells"]["ideal"]["best"]


# ------------------------------------------------------------------------------- formats
def test_markdown_shape_and_ci(tmp_path):
    runs = [load_run(make_run(tmp_path / "a")), load_run(make_run(tmp_path / "b", "resnet50"))]
    md = render(build_table(runs, ci=True, digits=2), "md")
    rows = _md_rows(md)
    assert len(rows) == 2 + 2 * len(VALUES)
    assert all(len(r) == 5 for r in rows)
    assert rows[2][3] == "**0.52** ± 0.05"


def test_csv_shape(tmp_path):
    runs = [load_run(make_run(tmp_path / "a")), load_run(make_run(tmp_path / "b", "resnet50"))]
    rows = list(csv.reader(io.StringIO(render(build_table(runs, ci=True), "csv"))))
    assert rows[0] == ["metric", "higher_is_better", "classifier",
                       "gradcam", "gradcam_ci_low", "gradcam_ci_high",
                       "rise", "rise_ci_low", "rise_ci_high",
                       "ideal", "ideal_ci_low", "ideal_ci_high", "best"]
    assert len(rows) == 1 + 2 * len(VALUES)
    assert all(len(r) == len(rows[0]) for r in rows)
    bg = rows[3]
    assert bg[:3] == ["background_coverage", "false", "vgg16"]
    assert float(bg[3]) == pytest.approx(0.20) and float(bg[4]) == pytest.approx(0.15)
    assert bg[-1] == "gradcam"
    assert rows[5][-1] == ""  # time_ms: cost, no best
    plain = list(csv.reader(io.StringIO(render(build_table(runs), "csv"))))
    assert len(plain[0]) == 3 + 3 + 1


def test_latex_shape(tmp_path):
    runs = [load_run(make_run(tmp_path / "a")), load_run(make_run(tmp_path / "b", "resnet50"))]
    tex = render(build_table(runs, ci=True), "latex")
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1)
    assert spec == "llccc"
    body = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 1 + 2 * len(VALUES)  # header + rows
    assert all(line.count(" & ") == len(spec) - 1 for line in body)
    assert "\\textbf{0.520} {\\scriptsize $\\pm$ 0.050}" in tex
    assert "background\\_coverage $\\downarrow$" in tex
    assert tex.count("\\midrule") == 1 + len(VALUES) - 1
    assert "\\toprule" in tex and "\\bottomrule" in tex


def test_missing_method_in_one_run_is_a_dash(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", "resnet50")
    s = json.loads((b / "summary.json").read_text())
    s["methods"].remove("rise")
    del s["results"]["rise"]
    (b / "summary.json").write_text(json.dumps(s))
    rows = _md_rows(render(build_table([load_run(a), load_run(b)]), "md"))
    assert rows[3] == ["", "resnet50", "**0.410**", "–", "1.000"]  # best without rise


# ------------------------------------------------------------------------------- command line
def test_cli_writes_each_format(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", "resnet50")
    for fmt, needle in (("md", "| mean_f1 ↑ |"), ("csv", "metric,higher_is_better"),
                        ("latex", "\\begin{tabular}")):
        out = tmp_path / f"t.{fmt}"
        assert main(["table", str(a), str(b), "--format", fmt, "--out", str(out)]) == 0
        assert needle in out.read_text()
    assert main(["table", str(a), "--metrics", "time_ms,mean_f1", "--methods", "rise"]) == 0
    rows = _md_rows(capsys.readouterr().out)
    assert rows[0] == ["metric", "rise"]
    assert [r[0] for r in rows[2:]] == ["time_ms ↓", "mean_f1 ↑"]


@pytest.mark.parametrize("setup,needle", [
    ("option", "differ in methods.rise.options.num_masks: 8000 in"),
    ("missing", "does not exist"),
    ("bad_json", "is not valid JSON"),
    ("unknown_metric", "--metrics: 'mean_f2' not in any of the runs"),
    ("no_config", "run configuration"),
])
def test_cli_refuses_with_exit_2_and_one_line(tmp_path, capsys, setup, needle):
    a = make_run(tmp_path / "a")
    args = ["table", str(a)]
    if setup == "option":
        cfg = _config("resnet50")
        cfg["methods"]["rise"]["options"]["num_masks"] = 500
        args.append(str(make_run(tmp_path / "b", "resnet50", config=cfg)))
    elif setup == "missing":
        args.append(str(tmp_path / "nope"))
    elif setup == "bad_json":
        (a / "summary.json").write_text("{not json")
    elif setup == "unknown_metric":
        args += ["--metrics", "mean_f2"]
    else:
        (a / "config.json").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
