"""Throughput and peak memory, measured the same way for training epochs and for benchmarks.

Peak memory (`peak_mem_mb`, MiB):
- CUDA: `torch.cuda.max_memory_allocated` of the device since the window started (the
  statistic is reset at the start), i.e. tensors only (weights, activations, workspace).
- CPU: the highest resident set size (RSS) of this process seen during the window, sampled
  every `interval_s` by a background thread. Not `ru_maxrss`: Ray reuses worker processes, so the
  process-wide maximum could be an earlier trial's. It includes everything resident in the
  process (Python, torch, the dataset); `peak_mem_delta_mb` is the increase over the RSS at the
  window's start, which first returns the free memory malloc holds (discbench.allocator), so
  memory freed earlier and reused inside the window is counted in the delta.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil
import torch

from .allocator import release_freed_memory

MIB = 2.0 ** 20


class PeakMemory:
    """Context manager measuring the peak memory of `device` while it is open.

    After exit: `peak_mb` (see module doc) and `delta_mb` (peak minus the level at entry).
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.005):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / MIB)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = self.peak_mb = torch.cuda.memory_allocated(self.device) / MIB
        else:
            # Free memory malloc kept (retain_freed_memory) would be reused unseen by RSS.
            release_freed_memory()
            self.start_mb = self.peak_mb = self._process.memory_info().rss / MIB
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="discbench-peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / MIB)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure (CUDA OOM, CPU allocator failure)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("out of memory", "can't allocate memory", "not enough memory"))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_autocast(device: torch.device, amp: str):
    """torch.autocast for a recipe's `amp` ("off", "bf16", "fp16"); a no-op context for "off"."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def _input_shape(model: torch.nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    """One item's shape: `input_size`, else the model's timm pretrained_cfg["input_size"]
    ((channels, H, W) for image models, (L, channels) for discbench's sequence models)."""
    if input_size is not None:
        return tuple(input_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise ValueError(f"{type(model).__name__} states no pretrained_cfg['input_size']; pass input_size")
    return tuple(cfg["input_size"])


def _result(images: int, elapsed_s: float, memory: PeakMemory, status: str, **context: Any) -> dict:
    return {
        "images_per_s": images / elapsed_s if status == "ok" and elapsed_s > 0 else None,
        "peak_mem_mb": memory.peak_mb,
        "peak_mem_delta_mb": memory.delta_mb,
        "status": status,
        **context,
    }


def inference_throughput(model: torch.nn.Module, batch_size: int, input_size: tuple[int, ...] | None = None,
                         device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5,
                         amp: str = "off") -> dict:
    """Forward passes per second on random inputs (batch_size, *input_size): input_size is one
    item's shape, (3, H, W) for images or (L, channels) for sequences; default: the model's
    pretrained_cfg["input_size"].

    Returns {images_per_s, peak_mem_mb, peak_mem_delta_mb, status, batch_size, input_size,
    seconds}: images_per_s (items per second) = batch_size × repeats / wall time of the
    `repeats` timed passes (after `warmup` untimed ones), in eval mode without gradients. Out
    of memory gives status "oom" and images_per_s None instead of raising. The model is left
    on `device` in eval mode.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    shape = _input_shape(model, input_size)
    context = dict(batch_size=batch_size, input_size=shape)
    memory = PeakMemory(device)
    seconds = 0.0
    try:
        with memory, torch.inference_mode(), amp_autocast(device, amp):
            images = torch.randn(batch_size, *shape, device=device)
            for _ in range(warmup):
                model(images)
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                model(images)
            _synchronize(device)
            seconds = time.perf_counter() - start
    except Exception as exc:  # only allocation failures become a result
        if not is_out_of_memory(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _result(0, 0.0, memory, "oom", seconds=None, **context)
    return _result(batch_size * repeats, seconds, memory, "ok", seconds=seconds, **context)


def training_throughput(model: torch.nn.Module, batch_size: int, num_classes: int,
                        input_size: tuple[int, ...] | None = None, device: torch.device | str = "cpu",
                        warmup: int = 1, repeats: int = 3, amp: str = "off") -> dict:
    """Training steps (forward, cross-entropy, backward, AdamW step) per second on random data
    (batch_size, *input_size), as items/s; input_size, return dict and "oom" handling as in
    `inference_throughput`. The model's weights change (it is trained on noise): pass a model
    built for measuring only."""
    device = torch.device(device)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = _input_shape(model, input_size)
    context = dict(batch_size=batch_size, input_size=shape)
    memory = PeakMemory(device)
    seconds = 0.0

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with amp_autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    try:
        with memory:
            images = torch.randn(batch_size, *shape, device=device)
            labels = torch.randint(0, num_classes, (batch_size,), device=device)
            for _ in range(warmup):
                step(images, labels)
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                step(images, labels)
            _synchronize(device)
            seconds = time.perf_counter() - start
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _result(0, 0.0, memory, "oom", seconds=None, **context)
    return _result(batch_size * repeats, seconds, memory, "ok", seconds=seconds, **context)
