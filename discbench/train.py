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

import contextlib
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
from .data import DATASETS, DataConfig, DatasetError, input_size, load_splits, sequence_length
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
    channels), num_classes, and for a discretized model (`model_info`) the method, variant and
    scan backend.

    Raises ValueError when the model cannot read the data (an image model on sequence data or
    the reverse) or is not a timm model.
    """
    from .models import family_names, model_info

    name = cfg.model.name
    info = model_info(name)
    modality = DATASETS[cfg.data.dataset].modality
    if info.modality != modality:
        wanted = (f"one of {', '.join(family_names('sequence'))}" if modality == "sequence"
                  else f"an image model, one of {', '.join(family_names('image'))} or timm's (e.g. deit_tiny_patch16_224)")
        raise ValueError(f"model.name {name!r} cannot read dataset {cfg.data.dataset!r}, which is "
                         f"{modality} data; use {wanted}")
    kwargs: dict[str, Any] = dict(cfg.model.kwargs)
    kwargs["num_classes"] = num_classes
    if modality == "sequence":
        kwargs["seq_len"], kwargs["in_chans"] = input_size(cfg.data)
        if cfg.model.patch_size is not None:
            raise ValueError(f"model.patch_size is for image models; {name} reads one sample per token")
    else:
        kwargs.update(img_size=cfg.data.image_size, in_chans=3)
        if cfg.model.patch_size is not None:
            kwargs["patch_size"] = cfg.model.patch_size
    if info.discretized:
        kwargs.update(method=cfg.method, variant=cfg.variant, scan_backend=cfg.model.scan_backend)
    return kwargs


def build_model(cfg: TrialConfig, num_classes: int, recipe: TrainConfig) -> torch.nn.Module:
    """timm.create_model for the trial (see `model_arguments`), with the recipe's dropout rates."""
    import timm

    kwargs = model_arguments(cfg, num_classes)
    kwargs.update(drop_rate=recipe.drop, drop_path_rate=recipe.drop_path)
    return timm.create_model(cfg.model.name, pretrained=False, **kwargs)


class Transformed(Dataset):
    """A raw dataset with a transform applied to its images."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label



def build_transforms(image_size: int, recipe: TrainConfig) -> tuple[Callable, Callable]:
    """(train, eval) transforms: PIL RGB image -> float tensor (3, image_size, image_size).

    Train: timm's `create_transform(is_training=True)` with the recipe's augmentation (random
    resized crop, flip, RandAugment, random erasing), or resize + centre crop when `augment` is
    off. As DeiT does for CIFAR-sized inputs (≤ 32 px), the random resized crop is replaced by a
    resize to image_size and a random crop with image_size/8 padding. Eval: resize to
    image_size / eval_crop_ratio and centre crop (timm's eval transform).
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    auto_augment = None if recipe.auto_augment == "none" else recipe.auto_augment
    train = create_transform(
        input_size=image_size, is_training=True, no_aug=not recipe.augment, hflip=recipe.hflip,
        color_jitter=recipe.color_jitter, auto_augment=auto_augment,
        interpolation=recipe.train_interpolation, re_prob=recipe.reprob, re_mode=recipe.remode,
        re_count=recipe.recount, crop_pct=1.0)
    if recipe.augment and image_size <= 32:
        train.transforms[0] = T.Compose([T.Resize(image_size), T.RandomCrop(image_size, padding=image_size // 8)])
    evaluate = create_transform(input_size=image_size, is_training=False, interpolation="bicubic",
                                crop_pct=recipe.eval_crop_ratio)
    return train, evaluate


def build_datasets(data: DataConfig, recipe: TrainConfig) -> tuple[Dataset, Dataset, Dataset, int]:
    """(train, val, test, num_classes) (data.load_splits); recipe must be resolved.

    Image data get the recipe's transforms. Sequence data are used as they are: the image
    augmentations (augment, mixup, cutmix) are refused for them when the config is validated,
    and the fields that only act through `augment` (auto_augment, color_jitter, hflip,
    train_interpolation, reprob, remode, recount) or on images (eval_crop_ratio) are ignored.
    """
    splits = load_splits(data)
    if DATASETS[data.dataset].modality == "sequence":
        return splits.train, splits.val, splits.test, splits.num_classes
    train_tf, eval_tf = build_transforms(data.image_size, recipe)
    return (Transformed(splits.train, train_tf), Transformed(splits.val, eval_tf), Transformed(splits.test, eval_tf),
            splits.num_classes)


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
    # foreach: one call per update for all parameters instead of a few per parameter (on CPU too,
    # where torch's default is the per-parameter loop); the same arithmetic, bit for bit.
    return create_optimizer_v2(model, opt=recipe.opt, lr=lr, weight_decay=recipe.weight_decay,
                               momentum=recipe.momentum, foreach=True, **extra)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str,
              workers: Workers, hits_out: list[torch.Tensor] | None = None) -> tuple[float, float, float]:
    """(loss, top1 %, top5 %) over the whole split `loader` reads (each worker does its shard).
    hits_out: if given, each batch's top-1 hits ((batch,) bool, on the CPU) are appended."""
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
        if hits_out is not None:
            hits_out.append(hits[:, 0].cpu())
    loss_sum, correct1, correct5, count = workers.reduce([loss_sum, correct1, correct5, count], device)
    return loss_sum / count, 100.0 * correct1 / count, 100.0 * correct5 / count


def _evaluate_items(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str,
                    workers: Workers) -> tuple[float, np.ndarray | None]:
    """(top1 %, per-example top-1 correctness (N,) bool in the split's order). The
    correctness is None under data parallelism (each worker holds an interleaved shard)."""
    hits: list[torch.Tensor] | None = [] if workers.world_size == 1 else None
    _, top1, _ = _evaluate(model, loader, device, amp, workers, hits)
    return top1, (torch.cat(hits).numpy() if hits else None)


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
        on_start: StartCallback | None = None, evaluate_test: bool = True) -> dict:
    """Train one trial in this process; see `train_loop` for the callbacks and the result."""
    return train_loop(cfg, Path(workdir), on_epoch=on_epoch, on_start=on_start, evaluate_test=evaluate_test)


def train_loop(cfg: TrialConfig, workdir: Path, on_epoch: EpochCallback | None = None,
               on_start: StartCallback | None = None, workers: Workers = Workers(),
               device: torch.device | None = None, evaluate_test: bool = True) -> dict:
    """Train (or resume) one trial in `workdir`, as one of `workers` (a process group must exist
    when world_size > 1). Callbacks and checkpoint writes happen on the main worker only.
    Every epoch is evaluated on the val split; the final model on the test split, unless
    evaluate_test is False (the tuning stage: the test split is then never built).

    on_start(epochs_done): once, before training (0 for a fresh run).
    on_epoch(record): after each epoch; record = {epoch (1-based), train_loss, val_loss, top1,
      top5 (% on the val split), lr (mean over the epoch's steps), images_per_s (training images / training
      seconds, all workers), epoch_time_s (train + eval), peak_mem_mb (see discbench.measure;
      the largest over workers)}.
    Returns {status ("ok"|"diverged"), top1, top5 (% on the test split; None if diverged or
      without evaluate_test), train_loss (last completed epoch; None if none), epochs_done, train_time_s (sum of epoch times, across resumes),
      train_images_per_s, peak_mem_mb (over epochs), params, diverged_at (None or "epoch E, step S"),
      num_classes, transfer (`transfer_accuracy` at cfg.measure.eval_lengths, without the
      correctness; [] if none, diverged or without evaluate_test), correct ([{evaluation: "test" |
      "transfer", length (tokens; None for images), correct: (N,) bool per test example}] for the
      test split and each transfer length; [] if diverged, under data parallelism or without
      evaluate_test), lambda (`learned_lambda` over the test split; [] for a model without λ,
      diverged or without evaluate_test)}.
    """
    recipe = cfg.train.resolved()
    device = device or resolve_device(recipe)
    if recipe.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp 'fp16' needs a CUDA device; on CPU use 'bf16' or 'off'")
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = workdir / CHECKPOINT_NAME
    loaders = data_loaders(cfg, recipe, workers, device, with_test=evaluate_test)

    determinism = (torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(recipe.deterministic, warn_only=True)
    try:
        run = setup_training(cfg, recipe, loaders, workers, device)
        fingerprint = _resume_fingerprint(cfg)
        epochs_done, history = _resume(run, checkpoint_path, fingerprint, device)
        if workers.is_main and on_start is not None:
            on_start(epochs_done)
        if workers.world_size > 1:
            run.train_model = torch.nn.parallel.DistributedDataParallel(
                run.model, device_ids=[device.index] if device.type == "cuda" else None)

        diverged_at = None
        for epoch in range(epochs_done, recipe.epochs):
            record, diverged_at = _train_epoch(cfg, recipe, run, loaders, epoch, workers, device)
            if diverged_at is not None:
                break
            history.append(record)
            if workers.is_main:
                if on_epoch is not None:
                    on_epoch({k: v for k, v in record.items() if k != "train_seconds"})
                _save_checkpoint(run, epoch + 1, history, fingerprint, checkpoint_path)
            workers.barrier()

        return _summary(cfg, recipe, history, diverged_at, run.params, run.eval_model, loaders,
                        device, workers)
    finally:
        torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])


@dataclass(frozen=True)
class Loaders:
    """A trial's data: the training loader (full batches from `sampler`), this worker's shards
    of the val and test splits (test None when not asked for), and what the setup needs to know."""

    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    sampler: Any  # re-seeded per epoch (set_epoch)
    num_classes: int
    batch_size: int  # per worker
    mixup_active: bool


def data_loaders(cfg: TrialConfig, recipe: TrainConfig, workers: Workers, device: torch.device,
                 with_test: bool = True) -> Loaders:
    """The training, val and (with_test) test loaders; refuses a training split smaller than one
    batch and an odd batch under Mixup/CutMix (which pairs images)."""
    train_set, val_set, test_set, num_classes = build_datasets(cfg.data, recipe)
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
    return Loaders(train_loader, eval_loader(val_set, cfg.data, workers),
                   eval_loader(test_set, cfg.data, workers) if with_test else None, sampler, num_classes,
                   batch_size, mixup_active)


def eval_loader(split: Dataset, data: DataConfig, workers: Workers) -> DataLoader:
    """This worker's shard of an evaluation split (every world_size-th item), in order."""
    shard = Subset(split, range(workers.rank, len(split), workers.world_size))
    return DataLoader(shard, batch_size=data.eval_batch_size or data.batch_size, shuffle=False,
                      num_workers=data.workers)


@dataclass
class Training:
    """The objects one training run updates: the model (and its DDP wrapper and EMA), the
    optimizer, schedule, gradient scaler, Mixup and loss; all of them but the loss and Mixup
    are saved in the checkpoint."""

    model: torch.nn.Module
    train_model: torch.nn.Module  # the model; train_loop wraps it in DistributedDataParallel for > 1 worker
    eval_model: torch.nn.Module  # the EMA's model when train.eval_ema, else the model
    params: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # timm ModelEmaV3 or None
    scaler: torch.amp.GradScaler
    mixup: Any  # timm Mixup or None
    criterion: torch.nn.Module


def setup_training(cfg: TrialConfig, recipe: TrainConfig, loaders: Loaders, workers: Workers,
                    device: torch.device) -> Training:
    """The model initialised from the trial's seed, the optimizer at the batch-scaled learning
    rate, the timm schedule (per epoch or per update), EMA, AMP scaler, Mixup and loss."""
    from timm.data import Mixup
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    _seed_everything(order_seed(cfg.seed, MODEL_INIT_SLOT))
    model = build_model(cfg, loaders.num_classes, recipe).to(device)
    params = sum(p.numel() for p in model.parameters())
    lr = effective_lr(recipe, loaders.batch_size * workers.world_size)
    optimizer = _optimizer(model, recipe, lr)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, step_on_epochs=not recipe.sched_on_updates,
        updates_per_epoch=len(loaders.train))
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
    mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mixup_prob,
                  switch_prob=recipe.mixup_switch_prob, mode=recipe.mixup_mode,
                  label_smoothing=recipe.smoothing,
                  num_classes=loaders.num_classes) if loaders.mixup_active else None
    criterion = _criterion(recipe, loaders.mixup_active)
    eval_model = ema.module if ema is not None and recipe.eval_ema else model
    return Training(model, model, eval_model, params, optimizer, scheduler, ema, scaler, mixup, criterion)


def _resume(run: Training, checkpoint_path: Path, fingerprint: dict[str, Any],
            device: torch.device) -> tuple[int, list[dict]]:
    """Load the checkpoint into `run` if there is one (refused when written for another
    configuration); returns (epochs done, their records) — (0, []) for a fresh run."""
    if not checkpoint_path.exists():
        return 0, []
    state = torch.load(checkpoint_path, map_location=device, weights_only=False)
    differences = config_differences(without_result_neutral(state["fingerprint"]),  # checkpoint → config
                                     fingerprint)
    if differences:
        raise CheckpointMismatch(
            f"{checkpoint_path} was written for a different trial configuration "
            f"({'; '.join(differences[:5])}); delete it to start over")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.scaler.load_state_dict(state["scaler"])
    _restore_rng_states(state["rng"])
    return state["epochs_done"], state["history"]


def train_step(run: Training, recipe: TrainConfig, images: torch.Tensor, labels: torch.Tensor, updates: int,
               workers: Workers, device: torch.device) -> float:
    """One optimisation step on a batch (images: (b, ...) inputs, labels: (b,) class indices):
    Mixup, forward, loss, backward, clipping, optimizer, per-update schedule and EMA.

    Returns the loss (mean over workers); a non-finite loss (see `_is_non_finite_failure`)
    returns nan and updates nothing. `updates` is the 1-based count of updates so far
    including this one (the schedule's position). `discbench bench train` times this call.
    """
    from timm.utils import dispatch_clip_grad

    images, labels = images.to(device), labels.to(device)
    targets = labels
    if run.mixup is not None:
        images, targets = run.mixup(images, labels)
    try:
        with amp_autocast(device, recipe.amp):
            loss = run.criterion(run.train_model(images), targets)
        local_loss = loss.item()
    except (ValueError, RuntimeError) as exc:
        if not _is_non_finite_failure(exc, run.model, images):
            raise
        local_loss = math.nan
    (loss_value,) = workers.reduce([local_loss], device)
    loss_value /= workers.world_size
    if not math.isfinite(loss_value):
        return math.nan
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if recipe.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        dispatch_clip_grad(run.model.parameters(), value=recipe.clip_grad, mode="norm")
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step_update(num_updates=updates)
    if run.ema is not None:
        run.ema.update(run.model, step=updates)
    return loss_value


def _train_epoch(cfg: TrialConfig, recipe: TrainConfig, run: Training, loaders: Loaders, epoch: int,
                 workers: Workers, device: torch.device) -> tuple[dict | None, str | None]:
    """Epoch `epoch` (0-based): seed every RNG from (seed, epoch, rank), train over the loader,
    then evaluate. Returns (the epoch's record, None), or (None, "epoch E, step S") at the
    first non-finite loss (mean over workers)."""
    _seed_everything(order_seed(cfg.seed, epoch, workers.rank))
    loaders.sampler.set_epoch(order_seed(cfg.seed, epoch))
    run.scheduler.step(epoch)
    run.train_model.train()
    steps_per_epoch = len(loaders.train)
    loss_sum = lr_sum = 0.0
    steps = 0
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for step, (images, labels) in enumerate(loaders.train, start=1):
            updates = epoch * steps_per_epoch + step
            loss_value = train_step(run, recipe, images, labels, updates, workers, device)
            if not math.isfinite(loss_value):
                return None, f"epoch {epoch + 1}, step {step}"
            loss_sum += loss_value
            lr_sum += run.optimizer.param_groups[0]["lr"]
            steps += 1
        train_seconds = time.perf_counter() - start
        try:
            # data.val_fraction 0: no validation split, nothing to record
            val_loss, top1, top5 = (_evaluate(run.eval_model, loaders.val, device, recipe.amp, workers)
                                    if cfg.data.val_fraction > 0 else (math.nan, math.nan, math.nan))
        except (ValueError, RuntimeError) as exc:
            # the epoch's last update overflowed the weights: the run diverged, seen at evaluation
            if not _is_non_finite_failure(exc, run.eval_model, torch.zeros(())):
                raise
            return None, f"epoch {epoch + 1}, evaluation"
        epoch_seconds = time.perf_counter() - start
    (peak_mb,) = workers.reduce([memory.peak_mb], device, op="max")
    return {
        "epoch": epoch + 1, "train_loss": loss_sum / steps, "val_loss": val_loss,
        "top1": top1, "top5": top5, "lr": lr_sum / steps,
        "images_per_s": steps * loaders.batch_size * workers.world_size / train_seconds,
        "epoch_time_s": epoch_seconds, "peak_mem_mb": peak_mb,
        "train_seconds": train_seconds,
    }, None


def _save_checkpoint(run: Training, epochs_done: int, history: list[dict], fingerprint: dict[str, Any],
                     path: Path) -> None:
    """Everything a resume needs after `epochs_done` epochs (weights, optimizer, schedule, EMA,
    scaler, every RNG's state, the epoch records), written atomically."""
    _atomic_save({
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "scaler": run.scaler.state_dict(), "rng": _rng_states(), "epochs_done": epochs_done,
        "history": history, "fingerprint": fingerprint,
    }, path)


def transfer_accuracy(cfg: TrialConfig, model: torch.nn.Module, device: torch.device, amp: str,
                      workers: Workers = Workers(), at_trained: tuple[float, np.ndarray] | None = None) -> list[dict]:
    """Sampling-rate transfer: top-1 (%) of a model trained at length L on the same test signals
    resampled to each L′ of cfg.measure.eval_lengths, with every Δ scaled by L/L′ (a model
    without Δ, one without `delta_scaled`, runs as trained).

    Returns [{length: L′, delta_scale: L/L′, top1, correct}] in the order of eval_lengths ([]
    when none are asked for); correct: `_evaluate_items`'s per-example correctness. The
    model's Δ scale is restored afterwards. at_trained: `_evaluate_items` of this model on the
    test split, used as it is for L′ = L (the same signals, scale 1: the same computation).
    """
    from .data import sequence_length

    if not cfg.measure.eval_lengths:
        return []
    trained = sequence_length(cfg.data)
    out = []
    for length in cfg.measure.eval_lengths:
        if length == trained and at_trained is not None:
            out.append({"length": length, "delta_scale": 1.0, "top1": at_trained[0], "correct": at_trained[1]})
            continue
        resampled = cfg.data.model_copy(update={"seq_length": length})
        loader = eval_loader(load_splits(resampled).test, resampled, workers)
        scale = trained / length
        # A model without a discretization (a reference such as seqgru) has no Δ: it runs as trained.
        scaled = model.delta_scaled(scale) if hasattr(model, "delta_scaled") else contextlib.nullcontext()
        with scaled:
            top1, correct = _evaluate_items(model, loader, device, amp, workers)
        out.append({"length": length, "delta_scale": scale, "top1": top1, "correct": correct})
    return out


@torch.no_grad()
def learned_lambda(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str) -> list[dict]:
    """The per-token λ a trapezoid/paper model computes over `loader` (its test split): one record
    {layer, direction, mean, std, count} per layer and scan direction ([] for a model without λ).
    """
    from .models import MixerStack

    if not (isinstance(model, MixerStack) and model.learns_lambda):
        return []
    model.eval()
    with model.recording_lambda() as summary:
        for inputs, _ in loader:
            with amp_autocast(device, amp):
                model(inputs.to(device))
    return summary


def _summary(cfg: TrialConfig, recipe: TrainConfig, history: list[dict], diverged_at: str | None,
             params: int, eval_model: torch.nn.Module, loaders: Loaders, device: torch.device,
             workers: Workers) -> dict:
    """train_loop's result from the epoch records, plus the final model's test accuracy, its
    sampling-rate transfer, learned λ and per-example correctness (see train_loop)."""
    last = history[-1] if history else {}
    train_seconds = sum(r["train_seconds"] for r in history)
    train_images = sum(r["images_per_s"] * r["train_seconds"] for r in history)
    tested = diverged_at is None and loaders.test is not None
    correct, transfer, top1, top5 = [], [], None, None
    if tested:
        hits: list[torch.Tensor] | None = [] if workers.world_size == 1 else None
        _, top1, top5 = _evaluate(eval_model, loaders.test, device, recipe.amp, workers, hits)
        items = torch.cat(hits).numpy() if hits else None
        transfer = transfer_accuracy(cfg, eval_model, device, recipe.amp, workers, (top1, items))
        if items is not None:
            length = sequence_length(cfg.data) if DATASETS[cfg.data.dataset].modality == "sequence" else None
            correct.append({"evaluation": "test", "length": length, "correct": items})
        correct += [{"evaluation": "transfer", "length": t["length"], "correct": t.pop("correct")}
                    for t in transfer if t.get("correct") is not None]
    workers.barrier()
    return {
        "status": "diverged" if diverged_at else "ok",
        "top1": top1, "top5": top5, "train_loss": last.get("train_loss"),
        "epochs_done": len(history),
        "train_time_s": sum(r["epoch_time_s"] for r in history),
        "train_images_per_s": train_images / train_seconds if train_seconds > 0 else None,
        "peak_mem_mb": max((r["peak_mem_mb"] for r in history), default=None),
        "params": params,
        "num_classes": loaders.num_classes,
        "diverged_at": diverged_at,
        "transfer": [{k: v for k, v in t.items() if k != "correct"} for t in transfer],
        "correct": correct,
        "lambda": learned_lambda(eval_model, loaders.test, device, recipe.amp)
        if tested and workers.is_main else [],
    }
