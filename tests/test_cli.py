"""CLI smoke tests: the command line's user-facing contract (exit codes, one-line errors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from attrbench.cli import main


def test_unknown_method_is_one_line_did_you_mean(capsys, tmp_path):
    rc = main(["run", "--methods", "gradcm", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "Unknown method 'gradcm'. Did you mean: gradcam" in err
    assert not (tmp_path / "r").exists(), "a config error must stop the run before any work"


def test_console_script_exit_code_without_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "attrbench.cli", "run", "--methods", "gradcm",
                        "--no-progress"], capture_output=True, text=True, check=False)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "Did you mean: gradcam" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["run", "--metrics", "mean_f2"], "Unknown metric 'mean_f2'. Did you mean: mean_f1?"),
    (["run", "--preset", "synthetc"], "Unknown preset 'synthetc'. Did you mean: synthetic?"),
    (["run", "--limit", "0"], "--limit must be a positive integer"),
    (["run", "--method-option", "rise.num_masks=-5", "--methods", "rise"], "num_masks"),
    (["run", "--data-root", "/nonexistent/dir"], "/nonexistent/dir does not exist"),
])
def test_config_errors(args, needle, capsys, tmp_path):
    rc = main(args + ["--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err


def test_list_commands(capsys):
    for what, needle in [("methods", "gradcam"), ("metrics", "mean_f1"),
                         ("presets", "voc2007-vgg16"), ("models", "resnet50")]:
        assert main(["list", what]) == 0
        assert needle in capsys.readouterr().out


def test_run_smoke_writes_run_folder(capsys, tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--methods", "gradcam,ideal,constant_0.5", "--metrics",
               "mean_f1,cont_iou,pointing_game", "--limit", "6", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    for f in ("config.json", "scores.jsonl", "summary.csv", "summary.json", "summary.md"):
        assert (out / f).exists(), f
    assert "mean_f1 ↑" in printed and "gradcam" in printed
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 18  # 6 images x 3 methods
    summary = json.loads((out / "summary.json").read_text())
    ideal = summary["results"]["ideal"]["metrics"]
    assert ideal["mean_f1"]["value"] == pytest.approx(1.0)
    assert ideal["cont_iou"]["value"] == pytest.approx(1.0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["environment"]["torch"]
    assert cfg["config"]["methods"]["gradcam"]["name"] == "gradcam"
    # rerunning the same command resumes: nothing is recomputed or duplicated
    rc = main(["run", "--methods", "gradcam,ideal,constant_0.5", "--metrics",
               "mean_f1,cont_iou,pointing_game", "--limit", "6", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert len((out / "scores.jsonl").read_text().splitlines()) == 18
    # a different configuration in the same folder is refused
    rc = main(["run", "--methods", "gradcam", "--metrics", "mean_f1", "--limit", "6",
               "--out", str(out), "--no-progress"])
    assert rc == 2
    assert "another configuration" in capsys.readouterr().err
