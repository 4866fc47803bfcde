"""torchrun worlds: the process group, ranks agreeing on the job, and a failed rank named on every rank.

``torchrun`` starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment; the process group reads them (``env://``). Control messages
(agreement, failures, barriers) always go through gloo, which runs on CPU and GPU hosts alike; DDP's
gradients use NCCL on GPUs (:func:`backend`). A rank that raises still takes part in the final
exchange, so the other ranks learn which rank failed and why instead of waiting for a barrier that
never comes; a rank that dies outright is detected by torchrun's agent, which stops the others.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from dermstack.errors import ConfigError, DataError

#: How long a rank waits at a collective for the slowest rank before it gives up (gloo's timeout).
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0: the one rank that writes shared outputs."""
        return self.rank == 0


def torchrun_world() -> World | None:
    """The torchrun world of this process when it has more than one rank, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def backend(device: str | torch.device) -> str:
    """NCCL for CUDA tensors, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(world: World, device: str | torch.device = "cpu") -> Iterator[None]:
    """The default process group of ``world`` for the body (kept when the caller made one already)."""
    own = not dist.is_initialized()
    if own:
        if backend(device) == "nccl":
            torch.cuda.set_device(world.local_rank)  # "cuda" means this rank's GPU from here on
        dist.init_process_group(backend(device), timeout=TIMEOUT)
    try:
        yield
    finally:
        _CONTROL.clear()
        if own:
            dist.destroy_process_group()


_CONTROL: dict[str, object] = {}


def _control_group():
    """gloo for object collectives and barriers, also when the default group is NCCL (made once per group)."""
    if dist.get_backend() == "gloo":
        return None
    if "gloo" not in _CONTROL:
        _CONTROL["gloo"] = dist.new_group(backend="gloo", timeout=TIMEOUT)
    return _CONTROL["gloo"]


def gather(value, world: World, what: str) -> list:
    """``value`` of every rank, in rank order (any picklable object; ``what`` names the step in errors)."""
    values = [None] * world.size
    try:
        dist.all_gather_object(values, value, group=_control_group())
    except RuntimeError as e:  # a peer died or timed out; torchrun's summary names it
        raise DataError(f"{what}: rank {world.rank} lost the other torchrun ranks (one stopped, or did not report "
                        f"within {TIMEOUT}): {str(e).splitlines()[0]}") from None
    return values


def agree(world: World, what: str, value) -> None:
    """Every rank must run the same job: a ConfigError on every rank naming a rank whose ``value`` differs from rank 0's."""
    values = gather(value, world, what)
    for r, v in enumerate(values):
        if v != values[0]:
            keys = [k for k in v if v.get(k) != values[0].get(k)] if isinstance(v, dict) and isinstance(values[0], dict) else []
            detail = "; ".join(f"{k}: rank 0 {values[0].get(k)!r}, rank {r} {v.get(k)!r}" for k in keys) or f"{values[0]!r} vs {v!r}"
            raise ConfigError(f"torchrun ranks disagree on {what} ({detail}): start every rank with the same command and config")


@contextmanager
def all_or_none(world: World, what: str, hint: str = "") -> Iterator[None]:
    """Run the body on every rank, then compare notes: when any rank raised, every rank raises (the
    failed rank its own error, the others a DataError naming it), so no rank goes on to use the
    missing work of another."""
    error: Exception | None = None
    try:
        yield
    except Exception as e:  # reported to the other ranks, then raised again below
        error = e
    notes = gather(None if error is None else f"{type(error).__name__}: {error}", world, what)
    if error is not None:
        raise error
    failed = {r: note for r, note in enumerate(notes) if note is not None}
    if failed:
        raise DataError(f"{what} failed on torchrun rank " + "; rank ".join(f"{r}: {note}" for r, note in failed.items())
                        + (f" ({hint})" if hint else ""))


def barrier(world: World) -> None:
    """Wait for every rank (gloo, so that it works whatever the default backend)."""
    dist.barrier(group=_control_group())


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) on every rank: DDP keeps parameters equal, but each
    rank's last training step moved its own running statistics."""
    for b in module.buffers():
        dist.broadcast(b, 0)
