"""How device and precision are resolved on the machine at hand (ExtractSettings lives in dermstack.config)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dermstack.config import DEVICES, PRECISIONS, TTA_MODES, ExtractSettings  # noqa: F401  (re-exported)
from dermstack.errors import ConfigError
from dermstack.jobs import available_cores

#: flip dims of an NCHW batch, one entry per dermstack.config.TTA_MODES
TTA = {"hflip": (3,), "vflip": (2,)}
assert set(TTA) == set(TTA_MODES)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda (this rank's GPU under torchrun), then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available")
    return dev


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: plain fp32) and memory format on a device."""

    name: str
    dtype: torch.dtype | None
    channels_last: bool


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto``: fp16 on GPUs (bf16 where supported on CUDA), bf16 on CPUs with native bf16, else fp32.

    channels_last is used on CPU and CUDA (several times faster for CNNs with oneDNN on CPU)."""
    cl = device.type in ("cpu", "cuda")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "mps":
            name = "fp16"
        else:
            name = "bf16" if cpu_has_bf16() else "fp32"
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError("precision 'bf16' requested but this CPU has no native bf16 support; use fp32")
    return Precision(name, dtype, cl)


@dataclass(frozen=True)
class Parallelism:
    """How an extraction keeps the device busy: batches of ``batch_size`` go through ``streams`` model
    replicas in threads (sharing the weights), each with ``threads`` torch threads on CPU (None: leave
    torch alone); ``workers`` DataLoader processes decode, or with 0 each stream decodes its own batches."""

    batch_size: int
    streams: int
    threads: int | None
    workers: int

    def describe(self) -> str:
        decode = f"{self.workers} decode workers" if self.workers else "decoding in the streams"
        threads = f" x {self.threads} torch threads" if self.threads else ""
        return f"batch {self.batch_size}, {self.streams} streams{threads}, {decode}"


#: most streams "auto" starts on a CPU: beyond that the Python side of each forward pass contends for the GIL
MAX_AUTO_STREAMS = 4


#: CPU batch per stream: fp32 activations take twice the bytes of bf16 ones, and a stream runs
#: fastest while its batch's activations stay in the core's cache (batch 4 fp32: 1.25x batch 8; bf16:
#: batch 8 is 1.1x batch 4, benchmarks/extract_throughput.py --precision)
CPU_BATCH = {"fp32": 4, "bf16": 8, "fp16": 8}


def resolve_parallelism(settings: ExtractSettings, device: torch.device, precision: Precision,
                        cores: int | None = None) -> Parallelism:
    """Fill the ``None`` fields of ``settings`` with what is fastest on ``device`` at ``precision``.

    On a CPU, several single-threaded replicas beat one replica with every core (EfficientNet's
    depthwise layers scale poorly across threads), and decoding in the same threads beats DataLoader
    processes that preempt the model's threads: benchmarks/extract_throughput.py measures both."""
    cores = cores or available_cores()
    if device.type == "cpu":
        streams = settings.streams or max(1, min(cores, MAX_AUTO_STREAMS))
        threads = settings.threads or max(1, cores // streams)
        workers = 0 if settings.workers is None else settings.workers
        batch = settings.batch_size or CPU_BATCH[precision.name]
    else:
        streams = settings.streams or 1
        threads = settings.threads
        workers = min(cores, 8) if settings.workers is None else settings.workers
        batch = settings.batch_size or 64
    return Parallelism(batch, streams, threads, workers)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n

