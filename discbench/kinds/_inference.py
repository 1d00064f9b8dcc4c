"""Inference throughput and memory of a trial's architecture per (batch size, input size):
what the `train` kind measures after training and the `resolution` kind measures alone.

Image data are measured per resolution (pixels), sequence data at their length (tokens);
throughput counts the data's items (images/s or sequences/s: DatasetInfo.items).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..data import DATASETS, input_size, sequence_length
from ._base import Quantity, Recorder, measurement

if TYPE_CHECKING:
    from ..config import TrialConfig

_CONTEXT = ("model", "method_key", "batch_size", "resolution", "length")
QUANTITIES = {
    "throughput": Quantity("name='infer_images_per_s' (images/s, image data) or 'infer_sequences_per_s' "
                           "(sequences/s, sequence data); status 'ok' or 'oom'", _CONTEXT),
    "memory": Quantity("name='peak_mem_mb' (MiB; CUDA: max allocated, CPU: peak RSS) and on the CPU "
                       "'peak_mem_delta_mb' (peak RSS above the window's start); status 'ok' or 'oom'", _CONTEXT),
}


def throughput_name(cfg: TrialConfig) -> str:
    """The throughput's name for the trial's data: infer_images_per_s or infer_sequences_per_s."""
    return f"infer_{DATASETS[cfg.data.dataset].items}_per_s"


def trained_size(cfg: TrialConfig) -> int:
    """The resolution (image data) or length (sequence data) the trial trains at."""
    if DATASETS[cfg.data.dataset].modality == "sequence":
        return sequence_length(cfg.data)
    return cfg.data.image_size


def measure_settings(cfg: TrialConfig) -> list[tuple[int, int]]:
    """(batch size, resolution or length) pairs to measure; sequences only at their length."""
    sizes = cfg.measure.resolutions or [trained_size(cfg)]
    return [(b, r) for r in sizes for b in cfg.measure.batch_sizes]


def _rows(cfg: TrialConfig, measured: dict, batch_size: int, size: int, device_type: str) -> list[dict]:
    """Throughput and memory rows; `size` is the resolution (image data) or length (sequences).
    On the CPU also the peak RSS above the window's start (peak_mem_delta_mb): the process's own
    RSS (Python, torch, about 0.9 GiB) would swamp what the model allocates."""
    info = DATASETS[cfg.data.dataset]
    where = "length" if info.modality == "sequence" else "resolution"
    context = dict(model=cfg.model.name, method_key=cfg.method_key, batch_size=batch_size,
                   status=measured["status"], **{where: size})
    rows = [measurement("throughput", throughput_name(cfg), measured["images_per_s"], f"{info.items}/s", **context),
            measurement("memory", "peak_mem_mb", measured["peak_mem_mb"], "MiB",
                        note="CUDA: max allocated; CPU: peak RSS of the process", **context)]
    if device_type == "cpu":
        rows.append(measurement("memory", "peak_mem_delta_mb", measured.get("peak_mem_delta_mb"), "MiB",
                                note="CPU: peak RSS above the RSS at the window's start (inputs, "
                                     "activations, workspace)", **context))
    return rows


def measure_models(cfg: TrialConfig, settings: list[tuple[int, int]], num_classes: int,
                   record: Recorder) -> dict[tuple[int, int], dict[str, Any]]:
    """Inference items/s and peak memory of the trial's architecture at each (batch, size):
    a throughput and a memory row each recorded in `record`. Returns what
    measure.inference_throughput gave per setting ({"status": "oom", ...} when even the model
    did not fit).

    Speed and memory do not depend on the weights, so a fresh model is built per resolution
    (the position embedding's size depends on it)."""
    import torch

    from ..measure import inference_throughput, is_out_of_memory
    from ..train import build_model, resolve_device

    recipe = cfg.train.resolved()
    device = resolve_device(recipe)
    sequence = DATASETS[cfg.data.dataset].modality == "sequence"
    out: dict[tuple[int, int], dict] = {}
    for size in sorted({r for _, r in settings}):
        update = {"seq_length": size} if sequence else {"image_size": size}
        sized = cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
        try:
            model = build_model(sized, num_classes, recipe).to(device)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            model = None
        for batch_size in [b for b, r in settings if r == size]:
            if model is None:
                measured = {"status": "oom", "images_per_s": None, "peak_mem_mb": None, "peak_mem_delta_mb": None}
            else:
                measured = inference_throughput(model, batch_size=batch_size, input_size=input_size(sized.data),
                                                device=device, warmup=cfg.measure.warmup,
                                                repeats=cfg.measure.repeats, amp=recipe.amp)
            out[(batch_size, size)] = measured
            record.append_measurements(_rows(cfg, measured, batch_size, size, device.type))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out
