"""One trial trained by several data-parallel workers: Ray Train's TorchTrainer running
`train.train_loop` in every worker (process group: gloo on CPU, nccl on GPU, set up by Ray).

Each worker holds a DistributedDataParallel replica and its share of every epoch's batches
(the sampler's permutation is seeded by (seed, epoch), the same on every worker); the global
batch is data.batch_size × workers, and the lr scales with it under `lr_scaling: linear`. The
main worker (rank 0) writes the checkpoint into the trial folder, so with several machines that
folder must be on storage every worker can read (for resuming). Epoch records and the final
result travel from rank 0 to the caller through a Ray queue; callbacks run on the caller's
thread, as with `train.fit`.
"""

from __future__ import annotations

import queue as queue_module
import threading
from pathlib import Path
from typing import Any

from .config import TrialConfig
from .train import EpochCallback, StartCallback, Workers, train_loop

POLL_SECONDS = 0.2


def _worker_main(config: dict[str, Any]) -> None:
    """The per-worker entry point Ray Train calls (torch.distributed is initialised)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    workers = Workers(world_size=context.get_world_size(), rank=context.get_world_rank())
    messages = config["messages"]
    result = train_loop(
        TrialConfig(**config["trial"]), Path(config["workdir"]),
        on_epoch=lambda record: messages.put(("epoch", record)),
        on_start=lambda epochs_done: messages.put(("start", epochs_done)),
        workers=workers, device=ray.train.torch.get_device())
    if workers.is_main:
        messages.put(("result", result))


def fit_distributed(cfg: TrialConfig, workdir: Path, workers: int, use_gpu: bool = False,
                    on_epoch: EpochCallback | None = None, on_start: StartCallback | None = None,
                    cpus_per_worker: float = 1.0) -> dict:
    """Train one trial with `workers` data-parallel Ray Train workers; same callbacks and
    return dict as `train.fit`. Starts a local Ray instance when none is running. A worker's
    exception propagates (as Ray Train's TrainingFailedError)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    messages = Queue(actor_options={"num_cpus": 0})
    resources = {"GPU": 1} if use_gpu else {"CPU": cpus_per_worker}
    trainer = TorchTrainer(
        _worker_main,
        train_loop_config={"trial": cfg.model_dump(mode="json"), "workdir": str(workdir), "messages": messages},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name="ray_train", storage_path=str(workdir / "ray_train")),
    )

    failure: list[BaseException] = []

    def run() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="discbench-ray-train", daemon=True)
    thread.start()
    result = None

    def handle(kind: str, payload: Any) -> None:
        nonlocal result
        if kind == "start" and on_start is not None:
            on_start(payload)
        elif kind == "epoch" and on_epoch is not None:
            on_epoch(payload)
        elif kind == "result":
            result = payload

    try:
        while thread.is_alive():
            try:
                handle(*messages.get(timeout=POLL_SECONDS))
            except (Empty, queue_module.Empty):
                continue
        thread.join()
        while True:  # what rank 0 sent just before the trainer returned
            try:
                handle(*messages.get(block=False))
            except (Empty, queue_module.Empty):
                break
    finally:
        messages.shutdown()
    if failure:
        raise failure[0]
    if result is None:
        raise RuntimeError(f"Ray Train finished without a result from rank 0 (trial folder {workdir})")
    return result
