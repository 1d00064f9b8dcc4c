"""One trial trained by 2 data-parallel CPU workers under Ray Train (gloo)."""

from __future__ import annotations

import math

import pytest
import torch

from discbench.config import TrialConfig
from discbench.train import CHECKPOINT_NAME

EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_s", "epoch_time_s",
              "peak_mem_mb"}


@pytest.mark.slow
def test_two_cpu_workers_train_one_trial_and_resume_from_its_checkpoint(tmp_path, local_ray):
    from discbench.distributed import fit_distributed

    cfg = TrialConfig(
        data={"dataset": "digits", "image_size": 8, "train_limit": 128, "test_limit": 64, "batch_size": 16},
        model={"name": "vim_micro", "patch_size": 4},
        train={"preset": "digits", "epochs": 2},
        measure={"throughput": True, "batch_sizes": [8], "repeats": 1})
    log, starts = [], []
    result = fit_distributed(cfg, tmp_path, workers=2, on_epoch=log.append, on_start=starts.append)
    assert starts == [0] and [r["epoch"] for r in log] == [1, 2]
    assert all(set(r) == EPOCH_KEYS and math.isfinite(r["train_loss"]) for r in log)
    assert result["status"] == "ok" and result["epochs_done"] == 2
    # the final top-1 is over the 64 test images (both workers' shards), not the val split
    assert result["top1"] is not None and (result["top1"] * 64 / 100) == pytest.approx(round(result["top1"] * 64 / 100))
    assert "infer_images_per_s" not in result  # measured after training by the train trial kind (discbench/kinds/train.py)
    # 2 workers × 16 images per step: the 115 training images (128 less the 13 held out for
    # validation) make 3 full steps of 32 per epoch (images/s is steps × batch × workers over the
    # training seconds the checkpoint's history keeps)
    assert result["train_images_per_s"] > 0
    history = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["history"]
    assert [round(r["images_per_s"] * r["train_seconds"]) for r in history] == [96, 96]

    # Both workers load the finished checkpoint; nothing is left to train.
    again_log, again_starts = [], []
    again = fit_distributed(cfg, tmp_path, workers=2, on_epoch=again_log.append, on_start=again_starts.append)
    assert again_starts == [2] and again_log == [] and again["top1"] == result["top1"]
