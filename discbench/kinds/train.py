"""Trial kind `train`: train.fit (or distributed.fit_distributed for workers > 1) in the trial
folder, which keeps checkpoint.pt there and resumes from it; then the sampling-rate transfer
and learned-λ rows training returned, and (measure.throughput) a throughput and a memory row
at each measure.batch_sizes × measure.resolutions, with the trial row's inference throughput
(infer_images_per_s or infer_sequences_per_s) from the first batch size at the trained size.

Its report tables and figures are the report's shared machinery (discbench/report/tables.py
and figures.py); this file declares which of them show its results.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..data import DATASETS, DatasetError, input_size, load_splits, sequence_length
from ._base import Estimate, Events, Recorder, Quantity, TrialKind, measurement
from ._inference import QUANTITIES, measure_models, measure_settings, throughput_name, trained_size

if TYPE_CHECKING:
    from ..config import TrialConfig
    from ..report.study_view import StudyView

ESTIMATE_MAX_BATCH = 16  # training steps are timed at most at this batch, then scaled per image


def _transfer_rows(cfg: TrialConfig, transfer: list[dict]) -> list[dict]:
    if not transfer:
        return []
    note = f"trained at length {sequence_length(cfg.data)}; every Δ × delta_scale"
    return [measurement("transfer", "top1", t["top1"], "%", length=t["length"], delta_scale=t["delta_scale"],
                        model=cfg.model.name, method_key=cfg.method_key, status="ok", note=note)
            for t in transfer]


def run_train(cfg: TrialConfig, trial: dict, record: Recorder, events: Events) -> dict[str, Any]:
    def on_start(epochs_done: int) -> None:
        record.reset_epochs(epochs_done)
        if events.started:
            events.started(epochs_done)

    def on_epoch(epoch: dict) -> None:
        record.append_epoch(epoch)
        if events.epoch:
            events.epoch(epoch)

    resources = trial["resources"]
    if resources["workers"] > 1:
        from ..distributed import fit_distributed

        outcome = fit_distributed(cfg, record.folder, workers=resources["workers"], use_gpu=resources["gpus"] > 0,
                                  on_epoch=on_epoch, on_start=on_start, cpus_per_worker=resources["cpus"])
    else:
        from ..train import fit

        outcome = fit(cfg, record.folder, on_epoch=on_epoch, on_start=on_start)
    record.reset_measurements()
    record.write_correctness(outcome.pop("correct", None) or [])
    record.append_measurements(_transfer_rows(cfg, outcome.pop("transfer", None) or []))
    record.append_measurements([
        measurement("lambda", stat, layer[stat], "1", layer=layer["layer"], direction=layer["direction"],
                    model=cfg.model.name, method_key=cfg.method_key, note=f"{layer['count']} tokens of the test split")
        for layer in outcome.pop("lambda", None) or [] for stat in ("mean", "std")])
    throughput = throughput_name(cfg)
    outcome[throughput] = None
    if outcome["status"] == "ok" and cfg.measure.throughput:
        settings = measure_settings(cfg)
        measured = measure_models(cfg, settings, load_splits(cfg.data).num_classes, record)
        # the trial row's number: the first batch size at the trained size (if measured there)
        first = (cfg.measure.batch_sizes[0], trained_size(cfg))
        outcome[throughput] = measured[first if first in measured else settings[0]]["images_per_s"]
    return outcome


def _split_sizes(data) -> tuple[int, int, str]:
    """(train, val) items: what every epoch trains on and evaluates."""
    try:
        splits = load_splits(data)
        return len(splits.train), len(splits.val), "counted"
    except DatasetError:
        if DATASETS[data.dataset].sizes is None:
            raise
        n_source = min(DATASETS[data.dataset].sizes[0], data.train_limit or DATASETS[data.dataset].sizes[0])
        n_val = round(data.val_fraction * n_source)
        return n_source - n_val, n_val, "published size (files not found here)"


def _num_classes(data) -> int:
    """The dataset's classes as the registry states them, else counted in the user's files."""
    return DATASETS[data.dataset].classes(data) or load_splits(data).num_classes


def estimate_train(trials: list) -> Estimate:
    import torch

    from ..measure import inference_throughput, training_throughput
    from ..scan import NonFiniteInputError
    from ..train import build_model

    groups: dict[str, list] = {}
    for t in trials:
        key = json.dumps([t.config.model.model_dump(mode="json"), t.method_key, input_size(t.config.data)],
                         sort_keys=True)
        groups.setdefault(key, []).append(t)
    total, how = 0.0, []
    for members in groups.values():
        cfg = members[0].config
        recipe = cfg.train.resolved()
        num_classes = _num_classes(cfg.data)
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
        items = DATASETS[cfg.data.dataset].items
        size = f"{cfg.data.image_size}px" if len(shape) == 3 else f"{shape[0]} tokens × {shape[1]}"
        how.append(f"{cfg.model.name} {cfg.method_key} {size}: {train['images_per_s']:.0f} "
                   f"train / {infer['images_per_s']:.0f} eval {items}/s (batch {batch}, "
                   f"{used_threads} thread(s) as resources.cpus gives, CPU)")
        for t in members:
            n_train, n_val, _ = _split_sizes(t.config.data)
            epochs = t.config.train.resolved().epochs
            seconds = epochs * (n_train / train["images_per_s"] + n_val / infer["images_per_s"])
            total += seconds / t.resources.workers
    return Estimate(total, how)


def accuracy_or_note(view: StudyView):
    """The accuracy table, or a note when no trial recorded an accuracy."""
    from ..report.tables import accuracy_table as table

    if view.trials["top1"].notna().any() or (view.trials["status"] == "diverged").any():
        return table(view)
    return None, "Accuracy: no trial of this study recorded a top-1 accuracy."


_TABLES = "discbench.report.tables"
_FIGURES = "discbench.report.figures"

KIND = TrialKind(
    "train", None, builds_model=True, trains=True, run=run_train, estimate=estimate_train,
    quantities={
        **QUANTITIES,
        "transfer": Quantity("name='top1' (%): a model trained at one length evaluated on the same signals "
                             "resampled to `length` with every Δ × delta_scale (= trained length / length)",
                             ("model", "method_key", "length", "delta_scale")),
        "lambda": Quantity("name='mean' / 'std' (unit 1): the learned per-token λ of a trapezoid/paper model "
                           "over every token of the test split after training; layer (0-based), direction "
                           "('forward' or 'backward')", ("model", "method_key", "layer", "direction")),
    },
    tables=(accuracy_or_note, f"{_TABLES}:references_table", f"{_TABLES}:convergence_table",
            "discbench.report.tuning:tuning_table", "discbench.report.scaling:scaling_table",
            f"{_TABLES}:transfer_table", f"{_TABLES}:lambda_table",
            f"{_TABLES}:cost_table",
            f"{_TABLES}:ablation_bidirectional_table", f"{_TABLES}:ablation_classification_table",
            f"{_TABLES}:published_accuracy_table", f"{_TABLES}:mnist1d_published_table", f"{_TABLES}:efficiency_table"),
    figures=tuple(f"{_FIGURES}:{name}" for name in (
        "accuracy_figure", "tradeoff_figure", "training_curves_figure", "transfer_figure", "lambda_figure",
        "resolution_figure")) + ("discbench.report.tuning:sensitivity_figure",
                                 "discbench.report.scaling:scaling_figure"))
