"""Training one trial: the DeiT/Vim recipe assembled from timm's parts, checkpoint every epoch,
bit-exact resume, divergence as a result.

`fit(cfg, workdir, on_epoch, on_start)` trains in this process; `discbench.distributed` runs the
same `train_loop` in every worker of a Ray Train TorchTrainer.

Reproducibility: the model is initialised from `cfg.seed`; before epoch e (0-based) every RNG
(python, numpy, torch) is seeded from (seed, e, rank) and the sampler's permutation from
(seed, e) (`order_seed`), so the batches, augmentations, Mixup draws and drop-path masks of an
epoch are a function of (seed, epoch) and a run resumed from the checkpoint after epoch e logs
exactly what the uninterrupted run logs (on CPU with `deterministic: true`, same thread count
and worker count).

Divergence: a non-finite training loss (mean over workers) at step S of epoch E stops the trial
with status "diverged" and diverged_at "epoch E, step S" (both 1-based); the epoch is not logged
and no checkpoint is written for it. A forward pass that raises ValueError/RuntimeError while the
weights or the batch hold non-finite values (discbench's scan refuses a non-finite Δ) counts as a
non-finite loss at that step.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from .config import PRESETS, TrainConfig, TrialConfig, config_differences, without_result_neutral
from .data import DatasetError, build_datasets
from .measure import PeakMemory, amp_autocast
from .scan import NonFiniteInputError

__all__ = ["PRESETS", "fit", "train_loop", "Workers", "CheckpointMismatch", "CHECKPOINT_NAME",
           "order_seed", "build_model", "model_arguments", "effective_lr", "transfer_accuracy"]

CHECKPOINT_NAME = "checkpoint.pt"
REPEATED_AUG_REPEATS = 3  # DeiT's RASampler repeats every image 3 times
MODEL_INIT_SLOT = 0xFFFFFFFF  # the order_seed "epoch" reserved for model initialisation

EpochCallback = Callable[[dict], None]
StartCallback = Callable[[int], None]


class CheckpointMismatch(ValueError):
    """The trial folder's checkpoint was written for a different configuration."""


@dataclass(frozen=True)
class Workers:
    """This process's place among a trial's data-parallel workers (1 worker: no process group)."""

    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def reduce(self, values: list[float], device: torch.device, op: str = "sum") -> list[float]:
        """All-reduce floats over the workers (float64; op "sum" or "max")."""
        if self.world_size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def order_seed(seed: int, epoch: int, rank: int | None = None) -> int:
    """A 32-bit seed from (seed, epoch[, rank]): the per-epoch RNG and data-order seed."""
    words = [seed & 0xFFFFFFFF, epoch] + ([] if rank is None else [rank])
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _seed_everything(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # also seeds every CUDA device


def _rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resolve_device(recipe: TrainConfig) -> torch.device:
    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    if recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def effective_lr(recipe: TrainConfig, global_batch: int) -> float:
    """The optimizer's peak lr: DeiT's linear scaling rule lr × global_batch / lr_base_batch."""
    if recipe.lr_scaling == "linear":
        return recipe.lr * global_batch / recipe.lr_base_batch
    return recipe.lr


def model_arguments(cfg: TrialConfig, num_classes: int) -> dict[str, Any]:
    """timm.create_model's keyword arguments for the trial's model (beside its name and the
    recipe's dropout rates): model.kwargs, then the input the data give (image data: img_size,
    in_chans 3, patch_size if set; sequence data: seq_len and in_chans, the dataset's
    channels), num_classes, and for discbench's models the discretization and scan backend.

    Raises ValueError when the model cannot read the data (an image model on sequence data or
    the reverse) or is not a timm model.
    """
    import timm

    from .data import DATASETS, input_size
    from .models import DISCRETIZED_MODEL_NAMES, SEQ_MODEL_NAMES

    name = cfg.model.name
    if not timm.is_model(name):
        raise ValueError(f"model.name {name!r} is not a timm model; discbench's are "
                         f"{', '.join(DISCRETIZED_MODEL_NAMES)} (and timm's, e.g. deit_tiny_patch16_224)")
    sequence_data = DATASETS[cfg.data.dataset].is_sequence
    if sequence_data != (name in SEQ_MODEL_NAMES):
        data_kind, wanted = (("sequence", f"one of {', '.join(SEQ_MODEL_NAMES)}") if sequence_data
                             else ("image", "an image model (vim_*, deit_*, …)"))
        raise ValueError(f"model.name {name!r} cannot read dataset {cfg.data.dataset!r}, which is "
                         f"{data_kind} data; use {wanted}")
    kwargs: dict[str, Any] = dict(cfg.model.kwargs)
    kwargs["num_classes"] = num_classes
    if sequence_data:
        kwargs["seq_len"], kwargs["in_chans"] = input_size(cfg.data)
        if cfg.model.patch_size is not None:
            raise ValueError(f"model.patch_size is for image models; {name} reads one sample per token")
    else:
        kwargs.update(img_size=cfg.data.image_size, in_chans=3)
        if cfg.model.patch_size is not None:
            kwargs["patch_size"] = cfg.model.patch_size
    if name in DISCRETIZED_MODEL_NAMES:
        kwargs.update(discretization=cfg.method, variant=cfg.variant, scan_backend=cfg.model.scan_backend)
    return kwargs


def build_model(cfg: TrialConfig, num_classes: int, recipe: TrainConfig) -> torch.nn.Module:
    """timm.create_model for the trial (see `model_arguments`), with the recipe's dropout rates."""
    import timm

    kwargs = model_arguments(cfg, num_classes)
    kwargs.update(drop_rate=recipe.drop, drop_path_rate=recipe.drop_path)
    return timm.create_model(cfg.model.name, pretrained=False, **kwargs)


def _resume_fingerprint(cfg: TrialConfig) -> dict[str, Any]:
    """What must match between a checkpoint and the config resuming it (not the fields that do
    not change a result, config.result_neutral_fields, nor post-training measurements)."""
    fields = cfg.model_dump(mode="json", exclude={"measure"})
    fields["train"] = cfg.train.resolved().model_dump(mode="json", exclude={"preset"})
    return without_result_neutral(fields)


def _train_sampler(dataset: Dataset, recipe: TrainConfig, workers: Workers):
    """timm's RepeatAugSampler (repeated augmentation) or torch's DistributedSampler; both draw
    their permutation from the value given to set_epoch, which the loop sets to order_seed."""
    from timm.data.distributed_sampler import RepeatAugSampler
    from torch.utils.data import DistributedSampler

    if recipe.repeated_aug:
        return RepeatAugSampler(dataset, num_replicas=workers.world_size, rank=workers.rank,
                                shuffle=True, num_repeats=REPEATED_AUG_REPEATS)
    return DistributedSampler(dataset, num_replicas=workers.world_size, rank=workers.rank,
                              shuffle=True, seed=0, drop_last=False)


def _criterion(recipe: TrainConfig, mixup_active: bool) -> torch.nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()  # Mixup already smooths the targets
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
    return torch.nn.CrossEntropyLoss()


def _optimizer(model: torch.nn.Module, recipe: TrainConfig, lr: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    extra: dict[str, Any] = {}
    if "adam" in recipe.opt.lower() or "lamb" in recipe.opt.lower():
        extra = dict(eps=recipe.opt_eps, betas=tuple(recipe.opt_betas))
    return create_optimizer_v2(model, opt=recipe.opt, lr=lr, weight_decay=recipe.weight_decay,
                               momentum=recipe.momentum, **extra)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str,
              workers: Workers) -> tuple[float, float, float]:
    """(val_loss, top1 %, top5 %) over the whole val split (each worker does its shard)."""
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with amp_autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += len(labels)
    loss_sum, correct1, correct5, count = workers.reduce([loss_sum, correct1, correct5, count], device)
    return loss_sum / count, 100.0 * correct1 / count, 100.0 * correct5 / count


def _is_non_finite_failure(exc: Exception, model: torch.nn.Module, images: torch.Tensor) -> bool:
    """Whether a forward pass failed because values overflowed, i.e. the run diverged.

    Layers that validate their inputs raise instead of returning NaN: discbench's scan rejects
    a non-finite Δ with NonFiniteInputError (huge but finite weights overflow inside the
    block). Non-finite weights or inputs count too; anything else is a real error.
    """
    if isinstance(exc, NonFiniteInputError) or not torch.isfinite(images).all():
        return True
    return any(not torch.isfinite(p).all() for p in model.parameters())


def _atomic_save(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fit(cfg: TrialConfig, workdir: Path, on_epoch: EpochCallback | None = None,
        on_start: StartCallback | None = None) -> dict:
    """Train one trial in this process; see `train_loop` for the callbacks and the result."""
    return train_loop(cfg, Path(workdir), on_epoch=on_epoch, on_start=on_start)


def train_loop(cfg: TrialConfig, workdir: Path, on_epoch: EpochCallback | None = None,
               on_start: StartCallback | None = None, workers: Workers = Workers(),
               device: torch.device | None = None) -> dict:
    """Train (or resume) one trial in `workdir`, as one of `workers` (a process group must exist
    when world_size > 1). Callbacks and checkpoint writes happen on the main worker only.

    on_start(epochs_done): once, before training (0 for a fresh run).
    on_epoch(record): after each epoch; record = {epoch (1-based), train_loss, val_loss, top1,
      top5 (%), lr (mean over the epoch's steps), images_per_s (training images / training
      seconds, all workers), epoch_time_s (train + eval), peak_mem_mb (see discbench.measure;
      the largest over workers)}.
    Returns {status ("ok"|"diverged"), top1, top5, train_loss (last completed epoch; None if
      none), epochs_done, train_time_s (sum of epoch times, across resumes),
      train_images_per_s, peak_mem_mb (over epochs), params, diverged_at (None or "epoch E, step S"),
      transfer (`transfer_accuracy` at cfg.measure.eval_lengths; [] if none or diverged),
      lambda (`learned_lambda` over the val split; [] for a model without λ or diverged)}.
    """
    from timm.data import Mixup
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, dispatch_clip_grad

    recipe = cfg.train.resolved()
    device = device or resolve_device(recipe)
    if recipe.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp 'fp16' needs a CUDA device; on CPU use 'bf16' or 'off'")
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = workdir / CHECKPOINT_NAME

    train_set, val_set, num_classes = build_datasets(cfg.data, recipe)
    sampler = _train_sampler(train_set, recipe, workers)
    batch_size = cfg.data.batch_size
    if len(sampler) < batch_size:
        raise DatasetError(
            f"dataset {cfg.data.dataset!r}: {len(sampler)} training images per worker is fewer than "
            f"data.batch_size {batch_size} (full batches only); lower the batch size or raise train_limit")
    mixup_active = recipe.mixup > 0 or recipe.cutmix > 0
    if mixup_active and batch_size % 2:
        raise ValueError(f"data.batch_size {batch_size} must be even when Mixup/CutMix is on")
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True,
                              num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
    val_shard = Subset(val_set, range(workers.rank, len(val_set), workers.world_size))
    val_loader = DataLoader(val_shard, batch_size=cfg.data.eval_batch_size or batch_size,
                            shuffle=False, num_workers=cfg.data.workers)
    steps_per_epoch = len(train_loader)

    determinism = (torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(recipe.deterministic, warn_only=True)
    try:
        _seed_everything(order_seed(cfg.seed, MODEL_INIT_SLOT))
        model = build_model(cfg, num_classes, recipe).to(device)
        params = sum(p.numel() for p in model.parameters())
        lr = effective_lr(recipe, batch_size * workers.world_size)
        optimizer = _optimizer(model, recipe, lr)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=recipe.sched, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
            warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, step_on_epochs=not recipe.sched_on_updates,
            updates_per_epoch=steps_per_epoch)
        ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None
        scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                      switch_prob=recipe.mixup_switch_prob, mode=recipe.mixup_mode,
                      label_smoothing=recipe.smoothing, num_classes=num_classes) if mixup_active else None
        criterion = _criterion(recipe, mixup_active)

        epochs_done, history = 0, []
        fingerprint = _resume_fingerprint(cfg)
        if checkpoint_path.exists():
            state = torch.load(checkpoint_path, map_location=device, weights_only=False)
            differences = config_differences(without_result_neutral(state["fingerprint"]),  # checkpoint → config
                                             fingerprint)
            if differences:
                raise CheckpointMismatch(
                    f"{checkpoint_path} was written for a different trial configuration "
                    f"({'; '.join(differences[:5])}); delete it to start over")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            scaler.load_state_dict(state["scaler"])
            _restore_rng_states(state["rng"])
            epochs_done, history = state["epochs_done"], state["history"]
        if workers.is_main and on_start is not None:
            on_start(epochs_done)

        train_model = model
        if workers.world_size > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        eval_model = ema.module if ema is not None and recipe.eval_ema else model

        diverged_at = None
        for epoch in range(epochs_done, recipe.epochs):
            _seed_everything(order_seed(cfg.seed, epoch, workers.rank))
            sampler.set_epoch(order_seed(cfg.seed, epoch))
            scheduler.step(epoch)
            train_model.train()
            loss_sum = lr_sum = 0.0
            steps = 0
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                for step, (images, labels) in enumerate(train_loader, start=1):
                    images, labels = images.to(device), labels.to(device)
                    targets = labels
                    if mixup is not None:
                        images, targets = mixup(images, labels)
                    try:
                        with amp_autocast(device, recipe.amp):
                            loss = criterion(train_model(images), targets)
                        local_loss = loss.item()
                    except (ValueError, RuntimeError) as exc:
                        if not _is_non_finite_failure(exc, model, images):
                            raise
                        local_loss = math.nan
                    (loss_value,) = workers.reduce([local_loss], device)
                    loss_value /= workers.world_size
                    if not math.isfinite(loss_value):
                        diverged_at = f"epoch {epoch + 1}, step {step}"
                        break
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if recipe.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        dispatch_clip_grad(model.parameters(), value=recipe.clip_grad, mode="norm")
                    scaler.step(optimizer)
                    scaler.update()
                    updates = epoch * steps_per_epoch + step
                    scheduler.step_update(num_updates=updates)
                    if ema is not None:
                        ema.update(model, step=updates)
                    loss_sum += loss_value
                    lr_sum += optimizer.param_groups[0]["lr"]
                    steps += 1
                train_seconds = time.perf_counter() - start
                if diverged_at is not None:
                    break
                val_loss, top1, top5 = _evaluate(eval_model, val_loader, device, recipe.amp, workers)
                epoch_seconds = time.perf_counter() - start
            (peak_mb,) = workers.reduce([memory.peak_mb], device, op="max")
            record = {
                "epoch": epoch + 1, "train_loss": loss_sum / steps, "val_loss": val_loss,
                "top1": top1, "top5": top5, "lr": lr_sum / steps,
                "images_per_s": steps * batch_size * workers.world_size / train_seconds,
                "epoch_time_s": epoch_seconds, "peak_mem_mb": peak_mb,
                "train_seconds": train_seconds,
            }
            history.append(record)
            if workers.is_main:
                if on_epoch is not None:
                    on_epoch({k: v for k, v in record.items() if k != "train_seconds"})
                _atomic_save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "scaler": scaler.state_dict(), "rng": _rng_states(), "epochs_done": epoch + 1,
                    "history": history, "fingerprint": fingerprint,
                }, checkpoint_path)
            workers.barrier()

        return _summary(cfg, recipe, history, diverged_at, params, eval_model, val_loader, device, workers)
    finally:
        torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])


def transfer_accuracy(cfg: TrialConfig, model: torch.nn.Module, device: torch.device, amp: str,
                      workers: Workers = Workers()) -> list[dict]:
    """Sampling-rate transfer: top-1 (%) of a model trained at length L on the same val signals
    resampled to each L′ of cfg.measure.eval_lengths, with every Δ scaled by L/L′.

    Returns [{length: L′, delta_scale: L/L′, top1}] in the order of eval_lengths ([] when
    none are asked for). The model's Δ scale is restored afterwards.
    """
    from .data import load_splits, sequence_length

    if not cfg.measure.eval_lengths:
        return []
    trained = sequence_length(cfg.data)
    out = []
    for length in cfg.measure.eval_lengths:
        val = load_splits(cfg.data.model_copy(update={"seq_length": length})).val
        shard = Subset(val, range(workers.rank, len(val), workers.world_size))
        loader = DataLoader(shard, batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, shuffle=False)
        scale = trained / length
        with model.delta_scaled(scale):
            _, top1, _ = _evaluate(model, loader, device, amp, workers)
        out.append({"length": length, "delta_scale": scale, "top1": top1})
    return out


@torch.no_grad()
def learned_lambda(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str) -> list[dict]:
    """The per-token λ a trapezoid/paper model computes over `loader` (its val split): one record
    {layer, direction, mean, std, count} per layer and scan direction ([] for a model without λ).
    """
    if not getattr(model, "learns_lambda", False):
        return []
    model.eval()
    with model.recording_lambda() as summary:
        for inputs, _ in loader:
            with amp_autocast(device, amp):
                model(inputs.to(device))
    return summary


def _summary(cfg: TrialConfig, recipe: TrainConfig, history: list[dict], diverged_at: str | None,
             params: int, eval_model: torch.nn.Module, val_loader: DataLoader, device: torch.device,
             workers: Workers) -> dict:
    last = history[-1] if history else {}
    train_seconds = sum(r["train_seconds"] for r in history)
    train_images = sum(r["images_per_s"] * r["train_seconds"] for r in history)
    transfer = transfer_accuracy(cfg, eval_model, device, recipe.amp, workers) if diverged_at is None else []
    workers.barrier()
    return {
        "status": "diverged" if diverged_at else "ok",
        "top1": last.get("top1"), "top5": last.get("top5"), "train_loss": last.get("train_loss"),
        "epochs_done": len(history),
        "train_time_s": sum(r["epoch_time_s"] for r in history),
        "train_images_per_s": train_images / train_seconds if train_seconds > 0 else None,
        "peak_mem_mb": max((r["peak_mem_mb"] for r in history), default=None),
        "params": params,
        "diverged_at": diverged_at,
        "transfer": transfer,
        "lambda": learned_lambda(eval_model, val_loader, device, recipe.amp)
        if diverged_at is None and workers.is_main else [],
    }
