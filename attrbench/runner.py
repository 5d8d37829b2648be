"""``attrbench run``: configuration -> components -> evaluation -> run folder.

The steps, each in its own module:

1. :func:`attrbench.config.resolve` validates the :class:`~attrbench.config.RunConfig` (names,
   options, device) before any work;
2. :func:`attrbench.assemble.assemble` opens the dataset, loads the classifier and builds the
   methods and metrics (still configuration errors when something does not fit);
3. :func:`attrbench.evaluate.evaluate` scores every image with every method and metric and
   streams the rows to ``scores.jsonl`` (:class:`~attrbench.results.ResultStore`);
4. :mod:`attrbench.artifacts` writes the side files, :mod:`attrbench.results` the summary and
   :mod:`attrbench.report` the figures and ``report.html``.

With ``--devices N`` (or under ``torchrun``) the images are sharded over processes
(:mod:`attrbench.distributed`) and rank 0 merges the shards into one folder whose rows and
summary equal a one-process run's. A run folder that already holds rows is resumed: images done
for a method are skipped. Results do not depend on the batch composition (per-image seeds,
:func:`~attrbench.config.image_seed`), so a resumed run's rows and summary equal an uninterrupted
run's, except the cost metrics. A run in which every image failed for every method raises
:class:`RunFailedError` (after writing its folder), naming the most common reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import distributed as dist
from .artifacts import format_timings, read_timings, write_side_files, write_timings
from .assemble import assemble
from .config import ConfigError, ResolvedRun, RunConfig, check_names, resolve
from .evaluate import Timings, evaluate
from .results import ResultStore, environment_info, summarize, write_summary

__all__ = ["ConfigError", "RunConfig", "RunFailedError", "format_summary", "run"]


class RunFailedError(ValueError):
    """Every image failed for every method: the run produced no score."""


def run(cfg: RunConfig) -> Path:
    """Run the benchmark; returns the run folder."""
    if cfg.devices > 1 and dist.rank_world()[1] == 1:
        check_names(cfg)
        spec = resolve(cfg)  # every check before the processes start
        dist.launch(run, cfg, spec.devices, spec.device, str(spec.out))
        return spec.out
    device = None
    if dist.launched_by_torchrun():
        device = dist.join_torchrun_group(resolve(cfg).device)
    spec = resolve(cfg, device=device)
    parts = assemble(spec, announce=dist.is_main_process())
    rank, world = dist.rank_world()
    out = Path(dist.broadcast(str(spec.out))) if world > 1 else spec.out
    store = _open_store(out, parts.record, spec, rank, world)
    try:
        collected, timings = evaluate(
            dist.shard(parts.dataset, rank, world), parts.model, parts.methods, parts.metrics,
            store, spec.device, batch_size=spec.batch_size, seed=spec.seed,
            progress=spec.progress and rank == 0)
    finally:
        store.close()
    if world > 1:
        collected, timing_parts = _gather(collected, timings, world)
        if rank != 0:
            return out
        from .results import merge_shards

        merge_shards(out, {iid: i for i, iid in enumerate(parts.dataset.ids)},
                     list(parts.methods), spec.batch_size)
        write_timings(out, Timings.merged(timing_parts))
    else:
        write_timings(out, timings.to_dict())
    write_side_files(out, parts.dataset, spec.preset, parts.methods, parts.metrics, collected)
    summary = summarize(out, list(parts.methods), list(parts.metrics), reference=spec.reference)
    write_summary(out, summary)
    if spec.report:
        from .report import write_report

        write_report(out)
    _raise_if_all_failed(out, summary)
    return out


def _open_store(out: Path, record: dict[str, Any], spec: ResolvedRun, rank: int,
                world: int) -> ResultStore:
    """This process's result store; rank 0 creates (or checks) the folder first."""
    env = environment_info(str(spec.device))
    name = "scores.jsonl" if world == 1 else f"scores.rank{rank}.jsonl"
    if rank == 0:
        store = ResultStore(out, record, env, scores_name=name)
    dist.barrier(world)
    if rank > 0:
        store = ResultStore(out, record, env, scores_name=name)
    return store


def _gather(collected, timings: Timings, world: int):
    """Every rank's matrices and timings on every rank (the qualitative grid is rank 0's)."""
    flat = {f"{g}\t{m}": rows for g, per in collected.matrices.items() for m, rows in per.items()}
    merged = dist.gather_dicts(flat, world)
    collected.matrices = {}
    for key, rows in merged.items():
        g, m = key.split("\t", 1)
        collected.matrices.setdefault(g, {})[m] = rows
    worst = dist.gather_dicts(collected.worst, world)
    collected.worst = {m: sorted(v, key=lambda t: (t[0], t[1]))[:collected.worst_k]
                       for m, v in worst.items()}
    if dist.rank_world()[0] != 0:
        collected.qualitative = {}
    parts = dist.gather_dicts({"t": [timings.to_dict()]}, world)["t"]
    dist.barrier(world)
    return collected, parts


def _raise_if_all_failed(out: Path, summary: dict[str, Any]) -> None:
    """:class:`RunFailedError` when no method scored any image, naming the most common reason."""
    res = summary.get("results", {})
    if not res or any(r.get("n_images", 0) > 0 for r in res.values()):
        return
    from collections import Counter

    from .results import read_rows

    errors = [str(r.get("error") or "unknown") for r in read_rows(out) if r.get("status") != "ok"]
    if not errors:
        return
    short = Counter(e.split(":")[0] for e in errors)
    top, n = short.most_common(1)[0]
    example = next(e for e in errors if e.split(":")[0] == top)
    raise RunFailedError(f"every image failed for every method ({len(errors)} rows); most "
                         f"common reason ({n} rows): {example} (run folder: {out})")


def format_summary(run_dir: str | Path, columns: str | None = None) -> str:
    """The terminal table (:func:`attrbench.tables.render_text`; ``columns``: None = headline
    metrics fitted to 100 columns, ``"all"`` or ``"a,b"``), then where the wall time went."""
    from .tables import render_text

    text = render_text(json.loads((Path(run_dir) / "summary.json").read_text()), columns)
    timings = read_timings(run_dir)
    return text + ("\n\n" + format_timings(timings) if timings else "")
