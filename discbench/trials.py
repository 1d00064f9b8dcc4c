"""Running one trial: `run_trial(trial, events)` is the one entry point (the runner calls it
inside a Ray Tune trial). It takes the trial folder's lock, skips a trial already finished with
the same configuration, writes trial.json (status running → ok/diverged, or failed with the
error and traceback, then re-raises so that Ray retries), and dispatches to the trial's kind
(discbench.kinds: what each kind runs, measures, estimates and reports).

`trial` is a plain dict (it travels through Ray; runner.trial_dict makes it): trial_id, kind,
study, study_path, trial_config (TrialConfig fields), resolved (the full config stored with
the results), params (the kind's parameters), resources {cpus, gpus, workers}.

`estimate_seconds(kind, trials)` measures a few real steps on this machine and extrapolates
to the study (for `discbench run --dry-run`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from . import results
from .allocator import retain_freed_memory
from .config import TrialConfig, without_result_neutral
from .data import DATASETS
from .kinds import TRIAL_KINDS, Estimate, Events

FINISHED = ("ok", "diverged")
TRIAL_LOCK = ".running"
TRIAL_LOCK_WAIT_S = 120.0  # how long a trial waits for a stray earlier attempt to let go


class TrialFolderBusy(RuntimeError):
    """Another process (an earlier attempt that is still alive) holds the trial folder."""


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


def _base_row(trial: dict, cfg: TrialConfig, device: str) -> dict[str, Any]:
    kind = TRIAL_KINDS[trial["kind"]]
    info = DATASETS[cfg.data.dataset]
    return {
        "study": trial["study"], "trial_id": trial["trial_id"], "kind": trial["kind"],
        "method": cfg.method, "variant": cfg.variant, "method_key": cfg.method_key, "seed": cfg.seed,
        "model": cfg.model.name if kind.builds_model else None,
        "dataset": cfg.data.dataset if kind.trains else None,
        "image_size": cfg.data.image_size if kind.trains and info.modality == "image" else None,
        "config": trial["resolved"], "resources": json.dumps(trial["resources"], sort_keys=True),
        **results.provenance(device),
    }


def _device_of(cfg: TrialConfig, kind: str) -> str:
    if not TRIAL_KINDS[kind].builds_model:
        return "cpu"
    from .train import resolve_device

    return str(resolve_device(cfg.train.resolved()))


def run_trial(trial: dict[str, Any], events: Events | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) one trial; returns its trial.json row."""
    events = events or Events()
    folder = results.trial_dir(Path(trial["study_path"]), trial["trial_id"])
    fd = _lock_trial(folder)
    try:
        previous = results.read_trial(folder) or {}
        if previous.get("status") in FINISHED and previous.get("config") and \
                comparable(json.loads(previous["config"])) == comparable(trial["resolved"]):
            return previous
        cfg = TrialConfig.model_validate(trial["trial_config"])
        device = _device_of(cfg, trial["kind"])
        row = {**_base_row(trial, cfg, device), "status": "running",
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
            kind = TRIAL_KINDS[trial["kind"]]
            record = results.TrialRecorder(folder, tuple(kind.quantities))
            outcome = kind.run(cfg, trial, record, Events(started, events.epoch))
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


def estimate_seconds(kind: str, trials: list) -> Estimate:
    """Cost of running `trials` one after another on this machine, measured then extrapolated."""
    return TRIAL_KINDS[kind].estimate(trials)
