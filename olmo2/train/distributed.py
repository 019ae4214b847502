"""Data parallelism: torchrun process groups, DDP or FSDP2, and reductions that are no-ops in a
single process.

Launch: `torchrun --nproc-per-node N -m olmo2 train RECIPE.yaml` (torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Backend `gloo` on CPU, `nccl` on CUDA.

Multi-node (same command on every node, c10d rendezvous on the first node)::

    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint $HEAD_NODE:29500 --rdzv-id $JOB_ID -m olmo2 train RECIPE.yaml

Slurm (one task per node; srun starts torchrun on each)::

    #SBATCH --nodes=4 --ntasks-per-node=1 --gpus-per-node=8
    HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
    srun torchrun --nnodes $SLURM_NNODES --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint $HEAD:29500 --rdzv-id $SLURM_JOB_ID -m olmo2 train RECIPE.yaml

`trainer.run_dir` must be on a filesystem every node sees (rank 0 writes the HF files and
renames the checkpoint; every rank writes its DCP shard).

FSDP2 (`fully_shard`) wraps every block and then the root, with bf16 parameters in
forward/backward and fp32 gradient reduction (OLMo 2: FSDP "mixed" precision, fp32 reduce);
the sharded fp32 parameters stay the optimizer's master weights. DDP keeps full replicas.
Both average gradients over ranks; the trainer scales each rank's loss so that the average
equals the global-batch mean (see trainer.py).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(backend: str = "auto", device: torch.device | None = None) -> None:
    """Create the default process group when launched by torchrun (idempotent)."""
    if is_dist() or not launched_by_torchrun():
        return
    cuda = device is not None and device.type == "cuda"
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    log.info("process group: %s, rank %d of %d", backend, rank(), world_size())


def shutdown() -> None:
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_object(obj):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, strategy: str, param_dtype: str = "bf16") -> torch.nn.Module:
    """Apply DDP or FSDP2; `none` returns the model unchanged."""
    if strategy == "none":
        return model
    if not is_dist():
        raise ValueError(f"distributed.strategy={strategy!r} needs a torchrun launch")
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        dev = next(model.parameters()).device
        return DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dtype = torch.bfloat16 if param_dtype == "bf16" else torch.float32
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    raise ValueError(f"distributed.strategy={strategy!r}: expected none, ddp or fsdp")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and hasattr(model, "no_sync") else model


def no_sync(model: torch.nn.Module, last: bool):
    """Skip the gradient all-reduce on all micro-batches but the last (DDP `no_sync`, FSDP2
    `set_requires_gradient_sync`)."""
    if hasattr(model, "no_sync") and not last:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()
