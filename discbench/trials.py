"""What one trial does, per kind, and what it costs.

`run_trial(spec, events)` is the one entry point (the runner calls it inside a Ray Tune trial):
it takes the trial folder's lock, skips a trial already finished with the same configuration,
writes trial.json (status running → ok/diverged, or failed with the error and traceback, then
re-raises so that Ray retries), and dispatches to the kind:

    train       train.fit (or distributed.fit_distributed for workers > 1) in the trial folder,
                which keeps checkpoint.pt there and resumes from it; then (measure.throughput)
                a throughput and a memory row at each measure.batch_sizes × measure.resolutions,
                and the trial row's infer_images_per_s from the first batch size at the trained size
    numerics    numerics.convergence / fitted_order / stability_bound of the trial's method
    kernels     bench.time_scan per backend × length × pass
    resolution  inference images/s and peak memory of the (untrained) model per batch size ×
                resolution; out of memory is a result (status "oom")

`spec` is a plain dict (it travels through Ray): trial_id, kind, study, study_path,
trial_config (TrialConfig fields), resolved (the full config stored with the results), params
(the kind's parameters), resources {cpus, gpus, workers}.

`estimate_seconds(kind, trials)` measures a few real steps on this machine and extrapolates
to the study (for `discbench run --dry-run`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import results
from .allocator import retain_freed_memory
from .config import TrialConfig, without_result_neutral
from .data import DATASETS

FINISHED = ("ok", "diverged")
TRIAL_LOCK = ".running"
TRIAL_LOCK_WAIT_S = 120.0  # how long a trial waits for a stray earlier attempt to let go


class TrialFolderBusy(RuntimeError):
    """Another process (an earlier attempt that is still alive) holds the trial folder."""


@dataclass
class Events:
    """Callbacks from a running trial to whoever schedules it (all optional)."""

    started: Callable[[int], None] | None = None  # epochs already done (0 = fresh)
    epoch: Callable[[dict], None] | None = None  # the epoch record


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A stored/resolved config without the fields a resumed run may change (those that do not
    change a result: config.result_neutral_fields)."""
    return without_result_neutral(config)


def _lock_trial(folder: Path) -> int:
    """Hold folder/.running (fcntl) while this process works in the folder. After a crash of
    the runner an earlier attempt may still be alive for a moment; wait for it."""
    fd = os.open(folder / TRIAL_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + TRIAL_LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                holder = os.pread(fd, 64, 0).decode().strip() or "unknown"
                os.close(fd)
                raise TrialFolderBusy(f"trial folder {folder} is still used by process {holder} "
                                      f"after {TRIAL_LOCK_WAIT_S:.0f} s; stop it and run again") from None
            time.sleep(0.5)


def _base_row(spec: dict, cfg: TrialConfig, device: str) -> dict[str, Any]:
    kind = TRIAL_KINDS[spec["kind"]]
    return {
        "study": spec["study"], "trial_id": spec["trial_id"], "kind": spec["kind"],
        "method": cfg.method, "variant": cfg.variant, "method_key": cfg.method_key, "seed": cfg.seed,
        "model": cfg.model.name if kind.builds_model else None,
        "dataset": cfg.data.dataset if kind.trains else None,
        "image_size": cfg.data.image_size if kind.trains and not DATASETS[cfg.data.dataset].is_sequence
        else None,
        "config": spec["resolved"], "resources": json.dumps(spec["resources"], sort_keys=True),
        **results.provenance(device),
    }


def _device_of(cfg: TrialConfig, kind: str) -> str:
    if not TRIAL_KINDS[kind].builds_model:
        return "cpu"
    from .train import resolve_device

    return str(resolve_device(cfg.train.resolved()))


def run_trial(spec: dict[str, Any], events: Events | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) one trial; returns its trial.json row."""
    events = events or Events()
    folder = results.trial_dir(Path(spec["study_path"]), spec["trial_id"])
    fd = _lock_trial(folder)
    try:
        previous = results.read_trial(folder) or {}
        if previous.get("status") in FINISHED and previous.get("config") and \
                comparable(json.loads(previous["config"])) == comparable(spec["resolved"]):
            return previous
        cfg = TrialConfig.model_validate(spec["trial_config"])
        device = _device_of(cfg, spec["kind"])
        row = {**_base_row(spec, cfg, device), "status": "running",
               "started_at": previous.get("started_at") or results.now(), "finished_at": None,
               "attempts": int(previous.get("attempts") or 0) + 1,
               "resumed_from_epoch": previous.get("resumed_from_epoch"),
               "error": None, "traceback": None}
        results.write_trial(folder, row)

        def started(epochs_done: int) -> None:
            row["resumed_from_epoch"] = epochs_done if epochs_done > 0 else row["resumed_from_epoch"]
            results.write_trial(folder, row)
            if events.started:
                events.started(epochs_done)

        retain_freed_memory()  # no page faults for every large tensor (discbench.allocator)
        try:
            outcome = TRIAL_KINDS[spec["kind"]].run(cfg, spec, folder, Events(started, events.epoch))
        except Exception as exc:  # recorded, then raised again so that Ray retries the trial
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(), finished_at=results.now())
            results.write_trial(folder, row)
            raise
        # KeyboardInterrupt/SystemExit leave status "running": an interrupted trial resumes
        row.update(outcome)
        row["finished_at"] = results.now()
        results.write_trial(folder, row)
        return row
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- train

def _measurement(kind: str, name: str, value: Any, unit: str, **context: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "value": value, "unit": unit, **context}


def _throughput_rows(cfg: TrialConfig, measured: dict, batch_size: int, size: int, device_type: str) -> list[dict]:
    """Throughput and memory rows; `size` is the resolution (image data) or length (sequences).
    On the CPU also the peak RSS above the window's start (peak_mem_delta_mb): the process's own
    RSS (Python, torch, about 0.9 GiB) would swamp what the model allocates."""
    from .data import DATASETS

    where = "length" if DATASETS[cfg.data.dataset].is_sequence else "resolution"
    context = dict(model=cfg.model.name, method_key=cfg.method_key, batch_size=batch_size,
                   status=measured["status"], **{where: size})
    rows = [_measurement("throughput", "infer_images_per_s", measured["images_per_s"], "images/s", **context),
            _measurement("memory", "peak_mem_mb", measured["peak_mem_mb"], "MiB",
                         note="CUDA: max allocated; CPU: peak RSS of the process", **context)]
    if device_type == "cpu":
        rows.append(_measurement("memory", "peak_mem_delta_mb", measured.get("peak_mem_delta_mb"), "MiB",
                                 note="CPU: peak RSS above the RSS at the window's start (inputs, "
                                      "activations, workspace)", **context))
    return rows


def _transfer_rows(cfg: TrialConfig, transfer: list[dict]) -> list[dict]:
    from .data import sequence_length

    if not transfer:
        return []
    note = f"trained at length {sequence_length(cfg.data)}; every Δ × delta_scale"
    return [_measurement("transfer", "top1", t["top1"], "%", length=t["length"], delta_scale=t["delta_scale"],
                         model=cfg.model.name, method_key=cfg.method_key, status="ok", note=note)
            for t in transfer]


def _trained_size(cfg: TrialConfig) -> int:
    """The resolution (image data) or length (sequence data) the trial trains at."""
    from .data import DATASETS, sequence_length

    return sequence_length(cfg.data) if DATASETS[cfg.data.dataset].is_sequence else cfg.data.image_size


def _measure_settings(cfg: TrialConfig) -> list[tuple[int, int]]:
    """(batch size, resolution or length) pairs to measure; sequences only at their length."""
    sizes = cfg.measure.resolutions or [_trained_size(cfg)]
    return [(b, r) for r in sizes for b in cfg.measure.batch_sizes]


def _measure_models(cfg: TrialConfig, settings: list[tuple[int, int]], num_classes: int,
                    folder: Path) -> dict[tuple[int, int], dict]:
    """Inference images/s and peak memory of the trial's architecture at each (batch, size):
    a throughput and a memory row each in folder's measurements. Returns what
    measure.inference_throughput gave per setting ({"status": "oom", ...} when even the model
    did not fit).

    Speed and memory do not depend on the weights, so a fresh model is built per resolution
    (the position embedding's size depends on it)."""
    import torch

    from .data import DATASETS, input_size
    from .measure import inference_throughput, is_out_of_memory
    from .train import build_model, resolve_device

    recipe = cfg.train.resolved()
    device = resolve_device(recipe)
    sequence = DATASETS[cfg.data.dataset].is_sequence
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
            results.append_measurements(folder, _throughput_rows(cfg, measured, batch_size, size, device.type))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _run_train(cfg: TrialConfig, spec: dict, folder: Path, events: Events) -> dict[str, Any]:
    def on_start(epochs_done: int) -> None:
        results.reset_epochs(folder, epochs_done)
        if events.started:
            events.started(epochs_done)

    def on_epoch(record: dict) -> None:
        results.append_epoch(folder, record)
        if events.epoch:
            events.epoch(record)

    resources = spec["resources"]
    if resources["workers"] > 1:
        from .distributed import fit_distributed

        outcome = fit_distributed(cfg, folder, workers=resources["workers"], use_gpu=resources["gpus"] > 0,
                                  on_epoch=on_epoch, on_start=on_start, cpus_per_worker=resources["cpus"])
    else:
        from .train import fit

        outcome = fit(cfg, folder, on_epoch=on_epoch, on_start=on_start)
    results.reset_measurements(folder)
    results.write_correctness(folder, outcome.pop("correct", None) or [])
    results.append_measurements(folder, _transfer_rows(cfg, outcome.pop("transfer", None) or []))
    results.append_measurements(folder, [
        _measurement("lambda", stat, record[stat], "1", layer=record["layer"], direction=record["direction"],
                     model=cfg.model.name, method_key=cfg.method_key, note=f"{record['count']} tokens of the val split")
        for record in outcome.pop("lambda", None) or [] for stat in ("mean", "std")])
    outcome["infer_images_per_s"] = None
    if outcome["status"] == "ok" and cfg.measure.throughput:
        from .data import load_splits

        settings = _measure_settings(cfg)
        measured = _measure_models(cfg, settings, load_splits(cfg.data).num_classes, folder)
        # the trial row's number: the first batch size at the trained size (if measured there)
        first = (cfg.measure.batch_sizes[0], _trained_size(cfg))
        outcome["infer_images_per_s"] = measured[first if first in measured else settings[0]]["images_per_s"]
    return outcome


# ----------------------------------------------------------------------------- numerics

def _run_numerics(cfg: TrialConfig, spec: dict, folder: Path, events: Events) -> dict[str, Any]:
    from . import numerics
    from .methods import get_method

    params = spec["params"]
    method = get_method(cfg.method, cfg.variant)
    frame = numerics.convergence(method.key, params["steps"], a=params["pole"], T=params["horizon"],
                                 backend=params["backend"])
    rows = [_measurement("convergence", "error", float(r.error), "abs", method_key=method.key,
                         steps=int(r.steps), dt=float(r.dt), backend=params["backend"])
            for r in frame.itertuples()]
    try:
        order = numerics.fitted_order(frame)
    except ValueError as exc:  # every error at rounding level: no order to fit
        order, note = math.nan, str(exc)
    else:
        note = None
    bound = numerics.stability_bound(method)
    rows += [
        _measurement("order", "measured_order", order, "1", method_key=method.key, note=note),
        _measurement("order", "stated_order", float(method.order), "1", method_key=method.key),
        _measurement("stability", "bound", bound, "z", method_key=method.key),
        _measurement("stability", "stated_bound", float(method.stability_bound), "z", method_key=method.key),
    ]
    results.reset_measurements(folder)
    results.append_measurements(folder, rows)
    return {"status": "ok"}


# ----------------------------------------------------------------------------- kernels

def _backend_unavailable(backend: str) -> str | None:
    if backend == "mamba_ref":
        from .bench import mamba_selective_scan_ref

        return None if mamba_selective_scan_ref() is not None else "mamba_ssm is not installed"
    from .scan import BACKENDS

    return BACKENDS[backend].unavailable_reason()


def _run_kernels(cfg: TrialConfig, spec: dict, folder: Path, events: Events) -> dict[str, Any]:
    from .bench import time_scan

    params = spec["params"]
    results.reset_measurements(folder)
    for backend in params["backends"]:
        if backend == "mamba_ref" and cfg.method_key != "zoh/paper":
            continue  # mamba_ssm's reference computes Mamba's ZOH only
        why = _backend_unavailable(backend)
        for length in params["lengths"]:
            for pass_ in params["passes"]:
                context = dict(method_key=cfg.method_key, backend=backend, batch_size=params["batch"],
                               length=length, **{"pass": pass_})
                if why is not None:
                    rows = [_measurement("scan_time", "ms_median", None, "ms", status="unavailable",
                                         note=why, **context)]
                else:
                    row = time_scan(cfg.method, cfg.variant, backend,
                                    (params["batch"], params["dim"], length, params["state"]),
                                    pass_, params["repeats"], dtype=params["dtype"])
                    note = f"dim {params['dim']}, state {params['state']}, {params['dtype']}, {row['threads']} threads"
                    rows = [_measurement("scan_time", name, row[name], "ms", status="ok", note=note, **context)
                            for name in ("ms_median", "ms_min")]
                results.append_measurements(folder, rows)
    return {"status": "ok"}


# ----------------------------------------------------------------------------- resolution

def _run_resolution(cfg: TrialConfig, spec: dict, folder: Path, events: Events) -> dict[str, Any]:
    results.reset_measurements(folder)
    # ImageNet's 1000 classes: the head's size as in the paper's models.
    _measure_models(cfg, _measure_settings(cfg), 1000, folder)
    return {"status": "ok"}


# ----------------------------------------------------------------------------- cost estimates

ESTIMATE_MAX_BATCH = 16  # training steps are timed at most at this batch, then scaled per image


@dataclass
class Estimate:
    """Measured cost of a set of trials: total seconds (one trial after another) and how."""

    seconds: float
    how: list[str]


def _split_sizes(data) -> tuple[int, int, str]:
    from .data import DATASETS, DatasetError, load_splits

    try:
        splits = load_splits(data)
        return len(splits.train), len(splits.val), "counted"
    except DatasetError:
        if DATASETS[data.dataset].sizes is None:
            raise
        n_train, n_val = DATASETS[data.dataset].sizes
        n_train = min(n_train, data.train_limit or n_train)
        n_val = min(n_val, data.val_limit or n_val)
        return n_train, n_val, "published size (files not found here)"


def _estimate_train(trials: list) -> Estimate:
    import torch

    from .data import input_size, load_splits
    from .measure import inference_throughput, training_throughput
    from .scan import NonFiniteInputError
    from .train import build_model

    groups: dict[str, list] = {}
    for t in trials:
        key = json.dumps([t.config.model.model_dump(mode="json"), t.method_key, input_size(t.config.data)],
                         sort_keys=True)
        groups.setdefault(key, []).append(t)
    total, how = 0.0, []
    for members in groups.values():
        cfg = members[0].config
        recipe = cfg.train.resolved()
        try:
            num_classes = load_splits(cfg.data).num_classes
        except Exception:
            num_classes = 1000 if cfg.data.dataset == "imagenet" else 100
        batch = min(cfg.data.batch_size, ESTIMATE_MAX_BATCH)
        torch.manual_seed(0)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(members[0].resources.cpus)))  # as the trial will run
        model = build_model(cfg, num_classes, recipe.model_copy(update={"drop_path": 0.0}))
        shape = input_size(cfg.data)
        try:
            train = training_throughput(model, batch, num_classes, shape, warmup=1, repeats=2)
            infer = inference_throughput(model, batch, shape, warmup=1, repeats=2)
        except NonFiniteInputError:
            # e.g. rk4 with |aΔ| far beyond its stability bound: its trials diverge at once
            how.append(f"{cfg.model.name} {cfg.method_key}: non-finite at the first step on random "
                       f"inputs (its trials will likely diverge at once); counted as 0 s")
            continue
        finally:
            used_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        if train["status"] != "ok" or infer["status"] != "ok":
            how.append(f"{cfg.model.name} {cfg.method_key}: out of memory at batch {batch} on this machine")
            continue
        size = f"{cfg.data.image_size}px" if len(shape) == 3 else f"{shape[0]} tokens × {shape[1]}"
        how.append(f"{cfg.model.name} {cfg.method_key} {size}: {train['images_per_s']:.0f} "
                   f"train / {infer['images_per_s']:.0f} eval images/s (batch {batch}, "
                   f"{used_threads} thread(s) as resources.cpus gives, CPU)")
        for t in members:
            n_train, n_val, _ = _split_sizes(t.config.data)
            epochs = t.config.train.resolved().epochs
            seconds = epochs * (n_train / train["images_per_s"] + n_val / infer["images_per_s"])
            total += seconds / t.resources.workers
    return Estimate(total, how)


def _estimate_numerics(trials: list) -> Estimate:
    first = trials[0]
    spec = {"params": first.params}
    start = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _run_numerics(first.config, spec, Path(tmp), Events())
    seconds = time.perf_counter() - start
    return Estimate(seconds * len(trials), [f"{first.method_key}: one whole numerics trial took {seconds:.1f} s"])


def _estimate_kernels(trials: list) -> Estimate:
    from .bench import time_scan

    params = trials[0].params
    shortest = min(params["lengths"])
    per_call: dict[str, float] = {}
    how = []
    for backend in params["backends"]:
        if _backend_unavailable(backend) is not None:
            continue
        row = time_scan(trials[0].config.method, trials[0].config.variant, backend,
                        (params["batch"], params["dim"], shortest, params["state"]), "fwd", 1, params["dtype"])
        per_call[backend] = row["ms_median"] / 1e3
        how.append(f"{backend}: {row['ms_median']:.2f} ms per fwd scan at length {shortest}")
    passes = sum(1 if p == "fwd" else 3 for p in params["passes"])  # fwd+bwd ≈ 3 fwd
    calls = params["repeats"] + 1
    per_trial = sum(s * calls * passes * sum(length / shortest for length in params["lengths"])
                    for s in per_call.values())
    how.append("extrapolated linearly in length; fwd+bwd counted as 3 forward passes")
    return Estimate(per_trial * len(trials), how)


def _estimate_resolution(trials: list) -> Estimate:
    from .measure import inference_throughput
    from .train import build_model

    total, how = 0.0, []
    for t in trials:
        cfg = t.config
        smallest = min(cfg.measure.resolutions or [cfg.data.image_size])
        sized = cfg.model_copy(update={"data": cfg.data.model_copy(update={"image_size": smallest})})
        model = build_model(sized, 1000, cfg.train.resolved())
        measured = inference_throughput(model, 1, (3, smallest, smallest), warmup=1, repeats=1)
        if measured["status"] != "ok":
            continue
        per_image = 1.0 / measured["images_per_s"]
        calls = cfg.measure.warmup + cfg.measure.repeats
        for batch, resolution in _measure_settings(cfg):
            total += per_image * batch * calls * (resolution / smallest) ** 2
        how.append(f"{cfg.model.name} {t.method_key}: {1e3 * per_image:.0f} ms per image at {smallest}px")
    how.append("extrapolated ∝ pixels × batch (attention in DeiT grows faster: a lower bound there)")
    return Estimate(total, how)


# ----------------------------------------------------------------------------- the kinds

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumericsParams(_Strict):
    """Convergence on h' = a h + v(t) (discbench.numerics) at these step counts."""

    steps: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [40, 80, 160, 320, 640],
                                                     min_length=2)
    pole: float = Field(-2.0, lt=0)  # a
    horizon: float = Field(3.0, gt=0)  # T
    backend: Literal["reference", "torch", "cpu"] = "reference"


class KernelsParams(_Strict):
    """Scan timings (discbench.bench.time_scan) per backend × length × pass."""

    backends: list[Literal["cpu", "torch", "reference", "mamba_ref"]] = Field(
        default_factory=lambda: ["cpu", "torch"], min_length=1)
    lengths: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [197], min_length=1)
    batch: int = Field(8, gt=0)
    dim: int = Field(384, gt=0)
    state: int = Field(16, gt=0)
    passes: list[Literal["fwd", "fwd+bwd"]] = Field(default_factory=lambda: ["fwd", "fwd+bwd"], min_length=1)
    repeats: int = Field(5, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass(frozen=True)
class TrialKind:
    """Everything about one kind of trial; study.py, runner.py and this module read it from
    TRIAL_KINDS, so a new kind is one entry there.

    params: its parameters (the study file's `<name>: {...}` section), None if it has none.
    builds_model: it builds the trial's model (the study checks it can; trial rows name it;
        the device comes from the training recipe).
    trains: it trains (its epochs count in progress; its dataset is checked before the run and
        shown in the trial table and rows).
    run(cfg, spec, folder, events) -> trial row update ({"status": ...}); writes measurements.
    estimate(trials) -> Estimate, measured on this machine (`discbench run --dry-run`).
    measurements: the results.MEASUREMENT_KINDS its rows may have.
    """

    name: str
    params: type[BaseModel] | None
    builds_model: bool
    trains: bool
    run: Callable[[TrialConfig, dict, Path, Events], dict]
    estimate: Callable[[list], Estimate]
    measurements: tuple[str, ...]


TRIAL_KINDS: dict[str, TrialKind] = {kind.name: kind for kind in (
    TrialKind("train", None, builds_model=True, trains=True, run=_run_train, estimate=_estimate_train,
              measurements=("throughput", "memory", "transfer", "lambda")),
    TrialKind("numerics", NumericsParams, builds_model=False, trains=False, run=_run_numerics,
              estimate=_estimate_numerics, measurements=("convergence", "order", "stability")),
    TrialKind("kernels", KernelsParams, builds_model=False, trains=False, run=_run_kernels,
              estimate=_estimate_kernels, measurements=("scan_time",)),
    TrialKind("resolution", None, builds_model=True, trains=False, run=_run_resolution,
              estimate=_estimate_resolution, measurements=("throughput", "memory")),
)}


def estimate_seconds(kind: str, trials: list) -> Estimate:
    """Cost of running `trials` one after another on this machine, measured then extrapolated."""
    return TRIAL_KINDS[kind].estimate(trials)
