"""Multi-process evaluation: launch (``--devices N`` or ``torchrun``), rank helpers, and the
collectives the runner uses to merge the shards into one run folder.

Image ``i`` of the dataset goes to rank ``i mod N``; every rank writes its own
``scores.rank<r>.jsonl`` and rank 0 merges them (:func:`attrbench.results.merge_shards`) into a
folder whose rows and summary equal a one-process run's.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_world()[0] == 0


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started and that has not joined its group yet."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and rank_world()[1] == 1


def join_torchrun_group(device: torch.device) -> str | None:
    """Join ``torchrun``'s process group (gloo on CPU, NCCL on GPUs); returns this rank's CUDA
    device (``cuda:LOCAL_RANK``) under NCCL, else None."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def gather_dicts(d: dict[str, list], world: int) -> dict[str, list]:
    """Every rank's ``{key: list}`` concatenated per key (in rank order) on every rank."""
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, d)
    out: dict[str, list] = {}
    for part in parts:
        for k, v in (part or {}).items():
            out.setdefault(k, []).extend(v)
    return out


def shard(dataset, rank: int, world: int):
    """This rank's images: ``rank, rank + world, ...``."""
    if world == 1:
        return dataset
    return torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))


def launch(run_fn, cfg, devices: int, device: torch.device, out: str):
    """Run ``run_fn(cfg_for_rank)`` in ``devices`` processes through Lightning Fabric
    (``ddp_spawn``); each process gets ``cfg`` with ``devices=1``, its own device and ``out``."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cuda" if device.type == "cuda" else "cpu", devices=devices,
                    strategy="ddp_spawn")
    fabric.launch(_worker, run_fn, cfg, out)


def _worker(fabric, run_fn, cfg, out: str) -> str:
    import dataclasses

    sub = dataclasses.replace(
        cfg, devices=1, out=out,
        device=str(fabric.device) if fabric.device.type == "cuda" else "cpu")
    try:
        return str(run_fn(sub))
    finally:
        import torch.distributed as dist

        # leave no process group to the interpreter's exit: gloo's threads torn down there can
        # abort the process ("terminate called without an active exception")
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
