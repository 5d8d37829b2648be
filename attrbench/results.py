"""The result store: one folder per run.

Files:
    config.json     every resolved option, package/torch versions, git hash, device
    scores.jsonl    one row per (image, method), appended and fsync'ed as produced:
                    ``{"image_id", "method", "status": "ok"|"failed", "error", "scores": {...}}``
    summary.json    per method and metric: value, 95 % CI (bootstrap over images), n, failures,
                    higher_is_better, version, definition; paired comparisons with a reference
    summary.csv     one row per method; per metric value, CI, n, paired test vs the reference
    summary.md      the table in Markdown: each metric marked ↑ or ↓, CIs, best value in bold,
                    † = significant paired difference from the reference method; a legend
    summary.tex     the same table for LaTeX (booktabs)
    figures/, report.html   written by ``attrbench report`` (:mod:`attrbench.report`)

Summary files are written atomically (temporary file + rename), so a crash never leaves a
half-written summary. A killed run leaves at worst one truncated last line in ``scores.jsonl``;
:class:`ResultStore` drops it on reopening, so a resumed run loses and duplicates nothing.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rundir import atomic_write_text, clean_json

SCHEMA_VERSION = 1

__all__ = ["atomic_write_text", "clean_json"]  # re-exported: the one writer and cleaner


class ConfigMismatchError(ValueError):
    """An existing run folder was made with another configuration."""


class DamagedRunError(ValueError):
    """A run folder's ``scores.jsonl`` holds a damaged line before its last one."""


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"commit": hash or None, "clean": bool or None}`` of the checkout attrbench is imported
    from (None outside a git checkout of attrbench). ``clean`` is False when tracked files are
    modified or untracked files are not ignored."""
    top = _git("rev-parse", "--show-toplevel")
    pkg = Path(__file__).resolve().parent
    if not top or Path(top.strip()).resolve() / "attrbench" != pkg:
        return {"commit": None, "clean": None}
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain")
    return {"commit": commit, "clean": None if status is None else status.strip() == ""}


def git_hash() -> str | None:
    return git_state()["commit"]


def environment_info(device: str) -> dict[str, Any]:
    import torch

    import attrbench

    info = {"attrbench": attrbench.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": device}
    git = git_state()
    info["git"], info["git_clean"] = git["commit"], git["clean"]
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class ResultStore:
    """A run folder. ``config`` is compared with an existing folder's ``config.json`` (the parts
    that define the results, i.e. without the ``environment`` entry) and a mismatch is refused."""

    def __init__(self, root: str | Path, config: dict[str, Any], environment: dict[str, Any],
                 scores_name: str = "scores.jsonl") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "config.json"
        self.scores_path = self.root / scores_name
        config = clean_json(config)
        if self.config_path.exists():
            old = json.loads(self.config_path.read_text())
            if old.get("config") != config:
                diff = sorted(k for k in set(old.get("config", {})) | set(config)
                              if old.get("config", {}).get(k) != config.get(k))
                raise ConfigMismatchError(
                    f"{self.root} holds a run with another configuration (differs in: "
                    f"{', '.join(diff)}); use another --out or the same options to resume")
        else:
            atomic_write_text(self.config_path, json.dumps(
                {"schema": SCHEMA_VERSION, "config": config, "environment": clean_json(environment)},
                indent=2))
        self.config = config
        self._repair_tail()
        if scores_name == "scores.jsonl":
            # temporary files of an atomic write that a killed run left behind
            for tmp in self.root.glob(".*.*"):
                if tmp.name.startswith((".config.json.", ".summary.")) and tmp.is_file():
                    tmp.unlink(missing_ok=True)
        # rows of this file and of any other shard file (a multi-process run) count as done
        self._done = {(r["image_id"], r["method"]) for r in self.rows()}
        for other in self.root.glob("scores*.jsonl"):
            if other != self.scores_path:
                self._done |= {(r["image_id"], r["method"]) for r in read_rows(other.parent, other.name)}
        # open for the store's lifetime (closed by close()): rows are appended batch by batch
        self._fh = open(self.scores_path, "a", encoding="utf-8")  # noqa: SIM115

    def _repair_tail(self) -> None:
        """Drop a truncated last line left by a killed process."""
        if not self.scores_path.exists():
            return
        data = self.scores_path.read_bytes()
        if not data:
            return
        keep = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
            try:
                json.loads(data[last_start:])
            except json.JSONDecodeError:
                keep = last_start
        if keep != len(data):
            with open(self.scores_path, "r+b") as f:
                f.truncate(keep)

    def done(self, image_id: str, method: str) -> bool:
        return (image_id, method) in self._done

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows and fsync: a row on disk is never lost."""
        lines = []
        for r in rows:
            key = (r["image_id"], r["method"])
            if key in self._done:
                continue
            self._done.add(key)
            lines.append(json.dumps(clean_json(r), sort_keys=True))
        if lines:
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def rows(self) -> Iterator[dict[str, Any]]:
        if not self.scores_path.exists():
            return
        with open(self.scores_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                    row["image_id"], row["method"]
                except (json.JSONDecodeError, TypeError, KeyError) as exc:
                    # only the last line can be cut by a killed run (it is dropped on opening);
                    # a damaged line in the middle is not guessed around
                    raise DamagedRunError(
                        f"{self.scores_path}:{n} is not a valid result row ({exc}); repair or "
                        f"delete that line, or use another --out") from None
                yield row

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_rows(run_dir: str | Path, name: str = "scores.jsonl") -> Iterator[dict[str, Any]]:
    path = Path(run_dir) / name
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def merge_shards(run_dir: str | Path, image_order: dict[str, int], method_order: list[str],
                 batch_size: int) -> int:
    """Merge ``scores.rank*.jsonl`` into ``scores.jsonl`` in the order a one-process run writes
    rows (batch by batch, method by method, image by image), then remove the shard files.

    Rows already in ``scores.jsonl`` (from an earlier resumed run) keep their place first.
    Returns the number of rows merged.
    """
    run_dir = Path(run_dir)
    shards = sorted(run_dir.glob("scores.rank*.jsonl"))
    if not shards:
        return 0
    existing = {(r["image_id"], r["method"]) for r in read_rows(run_dir)} if (
        run_dir / "scores.jsonl").exists() else set()
    rows = []
    for sh in shards:
        rows += [r for r in read_rows(run_dir, sh.name) if (r["image_id"], r["method"]) not in existing]
    m_idx = {m: i for i, m in enumerate(method_order)}

    def key(r):
        i = image_order.get(r["image_id"], len(image_order))
        return (i // batch_size, m_idx.get(r["method"], len(m_idx)), i)

    rows.sort(key=key)
    seen = set()
    lines = []
    for r in rows:
        k = (r["image_id"], r["method"])
        if k not in seen:
            seen.add(k)
            lines.append(json.dumps(r, sort_keys=True))
    with open(run_dir / "scores.jsonl", "a", encoding="utf-8") as f:
        if lines:
            f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for sh in shards:
        sh.unlink()
    return len(lines)


def summarize(run_dir: str | Path, methods: list[str], metrics: list[str],
              reference: str | None = None, test: str = "bootstrap") -> dict[str, Any]:
    """Aggregate ``scores.jsonl`` into the summary dict (order: the run's methods and metrics).

    Per method and metric: the metric's ``aggregate`` value, the 95 % bootstrap CI of the mean of
    the per-image values (``Metric.image_value``), ``n`` (finite per-image values),
    ``n_undefined`` and, for a metric whose protocol does not cover the method
    (``Metric.not_applicable``), ``not_applicable`` with the reason. Per method: ``n_images`` (ok rows), ``n_failed`` and ``failures`` (failed
    rows counted by reason: ``data``, ``no labels``, ``non-finite mask (NaN or inf)``, ``method
    raised <Error>``, ...) and ``metric_errors`` (ok rows on which a metric raised, by reason).
    ``paired`` holds every method's paired comparison with ``reference``
    (default: ``explainer`` if present, else the first method) on the images both scored; see
    :func:`attrbench.stats.paired_comparisons` (``test``: ``"bootstrap"`` or ``"wilcoxon"``).
    """
    from .catalog import METHODS, METRICS
    from .stats import paired_comparisons

    rows = _collect_rows(run_dir, methods, metrics)
    out: dict[str, Any] = {"methods": methods, "metrics": {}, "results": {}}
    classes = {k: METRICS.get(k) for k in metrics}
    for k in metrics:
        reg = classes[k].regression()
        out["metrics"][k] = {**classes[k].describe(), **reg, "cost": reg["kind"] == "cost"}
    per_image: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    for m in methods:
        res = {k: _metric_result(classes[k], rows, m, k, per_image) for k in metrics}
        out["results"][m] = {"n_images": rows.n_ok[m], "n_failed": rows.n_failed[m],
                             "failures": rows.errors[m], "metric_errors": rows.metric_errors[m],
                             "metrics": res}
    cost = frozenset(k for k in metrics if classes[k].kind == "cost")
    out["paired"] = paired_comparisons(per_image, methods, metrics, reference=reference, test=test,
                                       skip=cost)
    out["sanity_methods"] = [m for m in methods if m in METHODS and METHODS.get(m).sanity]
    return clean_json(out)


@dataclass
class _Rows:
    """``scores.jsonl`` gathered per method (:func:`_collect_rows`): per metric the stored
    per-image values, the image ids of the ok rows, counts of ok and failed rows, failure and
    metric-error reasons, and per metric (count, reason) of rows outside its protocol."""

    per: dict[str, dict[str, list]]
    ids: dict[str, list[str]]
    n_ok: dict[str, int]
    n_failed: dict[str, int]
    errors: dict[str, dict[str, int]]
    metric_errors: dict[str, dict[str, int]]
    n_a: dict[str, dict[str, tuple[int, str]]]


def _collect_rows(run_dir: str | Path, methods: list[str], metrics: list[str]) -> _Rows:
    rows = _Rows(per={m: {k: [] for k in metrics} for m in methods},
                 ids={m: [] for m in methods}, n_ok={m: 0 for m in methods},
                 n_failed={m: 0 for m in methods}, errors={m: {} for m in methods},
                 metric_errors={m: {} for m in methods}, n_a={m: {} for m in methods})
    for r in read_rows(run_dir):
        m = r["method"]
        if m not in rows.per:
            continue
        if r.get("status") != "ok":
            rows.n_failed[m] += 1
            reason = (r.get("error") or "unknown").split(":")[0][:80]
            rows.errors[m][reason] = rows.errors[m].get(reason, 0) + 1
            continue
        rows.n_ok[m] += 1
        if r.get("metric_error"):  # a metric raised on this image: its value is undefined
            reason = str(r["metric_error"]).split(":")[0][:80]
            rows.metric_errors[m][reason] = rows.metric_errors[m].get(reason, 0) + 1
        for k, why in (r.get("not_applicable") or {}).items():  # outside the protocol
            rows.n_a[m][k] = (rows.n_a[m].get(k, (0, ""))[0] + 1, str(why))
        rows.ids[m].append(str(r["image_id"]))
        for k in metrics:
            rows.per[m][k].append(r["scores"].get(k))
    return rows


def _metric_result(cls: Any, rows: _Rows, m: str, k: str,
                   per_image: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Method ``m``'s summary cell of metric ``k`` (class ``cls``); its finite per-image values
    go into ``per_image[m][k]`` for the paired comparisons."""
    from .interfaces import Metric
    from .stats import bootstrap_ci, bootstrap_ci_of

    vals = rows.per[m][k]
    value = cls.aggregate(vals)
    img_vals = [cls.image_value(v) for v in vals]
    per_image[m][k] = {i: v for i, v in zip(rows.ids[m], img_vals) if math.isfinite(v)}
    finite = [v for v in img_vals if math.isfinite(v)]
    if cls.aggregate.__func__ is Metric.aggregate.__func__ and not cls.per_class:
        lo, hi = bootstrap_ci(finite)  # the summary is the mean of the image values
    else:
        lo, hi = bootstrap_ci_of(cls.aggregate, vals)
    n_na, why = rows.n_a[m].get(k, (0, ""))
    res = {"value": value, "ci_low": lo, "ci_high": hi, "n": len(finite),
           "n_undefined": len(vals) - len(finite) - n_na}
    if n_na and not finite:
        res["not_applicable"] = why
    return res


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json``, ``summary.csv``, ``summary.md`` and ``summary.tex`` (atomically).

    The tables are rendered by :mod:`attrbench.tables` (value and 95 % CI per cell, best value
    per column in bold, ``†`` for a significant paired difference from the reference method).
    """
    from .tables import render_csv, render_latex, render_markdown

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "summary.csv", render_csv(summary))
    atomic_write_text(run_dir / "summary.md", render_markdown(summary))
    atomic_write_text(run_dir / "summary.tex", render_latex(summary))
