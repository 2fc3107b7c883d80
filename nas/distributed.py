"""Data-parallel runs under torchrun: process group, rank-0-only side effects, gradient and metric reduction.

`nas search` and `nas train` run unchanged under ``torchrun --nproc_per_node N`` (and its multi-node flags).
The environment that torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) turns this module on; without it, or with
WORLD_SIZE=1, every function here is a no-op and a run is the single-process run, bit for bit.

How a distributed step stays equal to the single-process step with the same global batch:

- data: each global batch of `data.batch_size` keys of the seeded order is cut into WORLD_SIZE slices, rank r
  taking slice r (:func:`shard_loader`), so the union of one step's per-rank batches is the single-process batch;
- gradients: averaged over ranks right after `backward` (:func:`all_reduce_grads`), before clipping and the
  optimiser step, so every rank takes the same step. An explicit all-reduce rather than DDP's hooks, because the
  supernet's sampled mode runs a different sub-graph each step; every rank samples the same one, since the
  Gumbel generators are seeded from the config alone;
- BatchNorm: per-rank statistics unless `run.sync_bn` (:func:`convert_sync_batchnorm`: torch's SyncBatchNorm on
  CUDA, :class:`GlobalBatchNorm2d` on CPU, where torch's has no kernel); running statistics are averaged over
  ranks at the end of every epoch (:func:`average_buffers`), so all ranks evaluate and save the same model;
- metrics: epoch loss means and confusion matrices are reduced over ranks (:func:`average_dict`,
  :func:`sum_confusion`); only rank 0 writes files (:func:`is_main`), and files every rank needs (checkpoint on
  resume, latency table) are read by rank 0 and broadcast (:func:`from_main`).

``NAS_DIST_DUMP=1`` makes every rank save its model state each epoch to ``<run>/dist_dump/<tag>.rank<r>.pt``
(:func:`dump_rank_state`): a debugging and test aid to check that ranks never diverge.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from nas.device import resolve_device
from nas.errors import UserError

if TYPE_CHECKING:
    from nas.metrics import ConfusionMatrix

__all__ = [
    "DistInfo",
    "GlobalBatchNorm2d",
    "ShardedSampler",
    "all_reduce_grads",
    "average_buffers",
    "average_dict",
    "average_grads_before_step",
    "barrier",
    "broadcast_module",
    "cleanup",
    "convert_sync_batchnorm",
    "dump_rank_state",
    "env_world",
    "from_main",
    "info",
    "is_distributed",
    "is_main",
    "local_device",
    "local_main_first",
    "setup",
    "shard_loader",
    "sum_confusion",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
DUMP_ENV = "NAS_DIST_DUMP"


@dataclass(frozen=True)
class DistInfo:
    """Who this process is in a torchrun job: global rank, world size, rank on its node, collective backend."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "gloo" (CPU) or "nccl" (CUDA)
    device: torch.device  # where collective buffers live: cpu for gloo, cuda:LOCAL_RANK for nccl


_INFO: DistInfo | None = None


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None
    if value < 0:
        raise UserError(f"environment variable {name}={raw!r} cannot be negative")
    return value


def env_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK; None outside torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    world, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if world < 1 or rank >= world:
        raise UserError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world, local


def setup(device: str = "auto") -> DistInfo | None:
    """Join the torchrun process group (gloo on CPU, NCCL on CUDA) once per process; None when not distributed.

    `device` is `run.device`; under torchrun a CUDA device becomes `cuda:LOCAL_RANK`, so a fixed `cuda:N`
    (every process on one GPU) is refused. Non-zero ranks log warnings only, so progress is reported once.
    """
    global _INFO
    if _INFO is not None:
        return _INFO
    world = env_world()
    if world is None or world[1] == 1:
        return None
    rank, size, local = world
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise UserError(f"run.device={device} puts every torchrun process on one GPU: use --device cuda "
                            "(each process takes cuda:LOCAL_RANK)")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA devices: "
                            "lower --nproc_per_node")
        torch.cuda.set_device(local)
        backend, coll = "nccl", torch.device("cuda", local)
    else:
        backend, coll = "gloo", torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=size)
        atexit.register(cleanup)
    _INFO = DistInfo(rank, size, local, backend, coll)
    if rank != 0:
        for name in ("nas", "search_spaces"):
            logging.getLogger(name).setLevel(logging.WARNING)
    log.info("distributed: %d processes, backend %s", size, backend)
    return _INFO


def cleanup() -> None:
    """Leave the process group (registered at exit by :func:`setup`)."""
    global _INFO
    if _INFO is not None and tdist.is_initialized():
        tdist.destroy_process_group()
    _INFO = None


def info() -> DistInfo | None:
    """This process's place in the job, or None when not distributed."""
    return _INFO


def is_distributed() -> bool:
    """Whether this process is one of several torchrun ranks."""
    return _INFO is not None


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files and prints."""
    return _INFO is None or _INFO.rank == 0


def local_device(device: torch.device) -> torch.device:
    """This rank's device: `cuda:LOCAL_RANK` when `device` is CUDA under torchrun, else `device` unchanged."""
    if _INFO is not None and device.type == "cuda":
        return _INFO.device
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _INFO is not None:
        tdist.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Run the block on each node's LOCAL_RANK 0 first, then on the other ranks (e.g. to build a data cache)."""
    first = _INFO is None or _INFO.local_rank == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def from_main(fn: Callable[[], T]) -> T:
    """`fn()` evaluated on rank 0 only and broadcast to every rank, so all ranks see rank 0's files.

    A :class:`UserError` raised on rank 0 is raised on every rank with the same one-line message.
    """
    if _INFO is None:
        return fn()
    payload: list[Any] = [None]
    if _INFO.rank == 0:
        try:
            payload[0] = ("ok", fn())
        except UserError as exc:
            payload[0] = ("user", str(exc))
        except Exception as exc:
            payload[0] = ("crash", f"{type(exc).__name__}: {exc}")
            tdist.broadcast_object_list(payload, src=0, device=_INFO.device)
            raise
    tdist.broadcast_object_list(payload, src=0, device=_INFO.device)
    kind, value = payload[0]
    if kind == "user":
        raise UserError(value)
    if kind == "crash":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def _modules_tensors(modules: Iterable[nn.Module | None], buffers: bool) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for m in modules:
        if m is None:
            continue
        out.extend(p.data for p in m.parameters())
        if buffers:
            out.extend(m.buffers())
    return out


def broadcast_module(*modules: nn.Module | None) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start whatever each rank initialised)."""
    if _INFO is None:
        return
    for t in _modules_tensors(modules, buffers=True):
        tdist.broadcast(t, src=0)


def _signature(flags: list[bool]) -> int:
    return sum((i + 1) * (i + 7) for i, f in enumerate(flags) if f) % (2**61)


def all_reduce_grads(params: Iterable[nn.Parameter] | torch.optim.Optimizer) -> None:
    """Average `.grad` over ranks in place (one flat all-reduce per dtype) for `params`, or every parameter of an
    optimiser; a parameter without a gradient keeps none, as in a single process, and ranks that disagree on
    which parameters have one are an error."""
    if _INFO is None:
        return
    if isinstance(params, torch.optim.Optimizer):
        params = [p for group in params.param_groups for p in group["params"]]
    params = [p for p in params if p.requires_grad]
    flags = [p.grad is not None for p in params]
    check = torch.tensor([sum(flags), _signature(flags)], dtype=torch.int64, device=_INFO.device)
    both = torch.cat([check, -check])
    tdist.all_reduce(both, op=tdist.ReduceOp.MAX)
    if not torch.equal(both[:2], -both[2:]):
        raise RuntimeError("ranks computed gradients for different parameters: their sampled architectures "
                           "or code paths diverged")
    groups: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault(p.grad.dtype, []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1).to(_INFO.device) for p in group])
        tdist.all_reduce(flat)
        flat /= _INFO.world_size
        for p, g in zip(group, flat.split([p.numel() for p in group])):
            p.grad.copy_(g.view_as(p.grad))


def average_grads_before_step(*optimizers: torch.optim.Optimizer) -> None:
    """Average gradients over ranks just before each `step()` of these optimisers (for steps taken inside
    library code, such as a KD critic's update)."""
    if _INFO is None:
        return

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        all_reduce_grads(opt)

    for opt in optimizers:
        opt.register_step_pre_hook(hook)


def average_buffers(*modules: nn.Module | None) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so every rank holds the same
    model; the running mean then equals the single-process one (an EMA is linear in the batch means)."""
    if _INFO is None:
        return
    bufs = [b for m in modules if m is not None for b in m.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1).to(_INFO.device, torch.float64) for b in bufs])
    tdist.all_reduce(flat)
    flat /= _INFO.world_size
    for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
        b.copy_(v.view_as(b))


def average_dict(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of per-rank running sums or means (same keys on every rank); unchanged alone."""
    if _INFO is None:
        return values
    keys = sorted(values)  # the reduction order; the result keeps the caller's order (the CSV's column order)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_INFO.device)
    tdist.all_reduce(t)
    t /= _INFO.world_size
    mean = dict(zip(keys, t.tolist()))
    return {k: mean[k] for k in values}


def sum_confusion(cm: ConfusionMatrix) -> None:
    """Add the other ranks' counts into `cm` (each rank scored its shard of the split)."""
    if _INFO is None:
        return
    mats = [cm.mat, *cm.bucket_mats]
    flat = torch.cat([torch.from_numpy(m).reshape(-1) for m in mats]).to(_INFO.device)
    tdist.all_reduce(flat)
    for m, v in zip(mats, flat.cpu().split([m.size for m in mats])):
        m[...] = v.view(m.shape).numpy()


class ShardedSampler(Sampler):
    """Rank `rank`'s share of a sampler's keys: from each consecutive global batch of `global_batch` keys it takes
    slice `rank` of `world` equal slices, so one step's per-rank batches together are the single-process batch."""

    def __init__(self, base: Sampler, global_batch: int, rank: int, world: int, drop_last: bool):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}) but got {rank}.")
        if global_batch % world:
            raise UserError(f"data.batch_size={global_batch} does not split evenly over {world} processes: "
                            f"use a multiple of {world}")
        self.base, self.global_batch, self.rank, self.world = base, global_batch, rank, world
        self.per_rank, self.drop_last = global_batch // world, drop_last

    def __len__(self) -> int:
        n = len(self.base)  # type: ignore[arg-type]
        full, rest = divmod(n, self.global_batch)
        extra = 0 if self.drop_last else max(0, min(self.per_rank, rest - self.rank * self.per_rank))
        return full * self.per_rank + extra

    def __iter__(self) -> Iterator[Any]:
        keys = list(self.base)
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        for start in range(0, len(keys), self.global_batch):
            chunk = keys[start:start + self.global_batch]
            if self.drop_last and len(chunk) < self.global_batch:
                break
            yield from chunk[lo:hi]


def shard_loader(loader: DataLoader) -> DataLoader:
    """The same loader for this rank: batches of `batch_size / WORLD_SIZE` from :class:`ShardedSampler`;
    the loader itself in a single process."""
    if _INFO is None:
        return loader
    assert loader.batch_size is not None
    sampler = ShardedSampler(loader.sampler, loader.batch_size, _INFO.rank, _INFO.world_size, loader.drop_last)
    return DataLoader(
        loader.dataset,
        batch_size=sampler.per_rank,
        sampler=sampler,
        num_workers=loader.num_workers,
        drop_last=loader.drop_last,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        tdist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the batches of all ranks (SyncBatchNorm for CPU / gloo,
    where torch's SyncBatchNorm has no kernel). Two differentiable all-reduces: the mean, then the centred
    second moment; running variance uses the unbiased global estimate, as `nn.BatchNorm2d` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_available() and tdist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        count = x.new_tensor([x.numel() / c])
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), count]))
        n = stats[-1].detach()
        mean = stats[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply(centred.pow(2).sum((0, 2, 3))) / n
        out = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return out


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        out = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def convert_sync_batchnorm(module: nn.Module, enabled: bool) -> nn.Module:
    """`module` with its BatchNorm layers synchronised over ranks when `enabled` and distributed (`run.sync_bn`);
    state-dict keys are unchanged, so checkpoints load either way."""
    if _INFO is None or not enabled:
        return module
    if _INFO.backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def dump_rank_state(run_dir: str | Path, tag: str, module: nn.Module) -> Path | None:
    """With NAS_DIST_DUMP=1, save this rank's `module` state to `<run_dir>/dist_dump/<tag>.rank<r>.pt` (every
    rank, a debugging and test aid to compare ranks); otherwise nothing."""
    if os.environ.get(DUMP_ENV) != "1":
        return None
    from nas.io import save_checkpoint

    rank = _INFO.rank if _INFO is not None else 0
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return save_checkpoint(Path(run_dir) / "dist_dump" / f"{tag}.rank{rank}.pt", state)
