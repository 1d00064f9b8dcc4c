"""`discbench run STUDY`: a study's trials on Ray Tune, resumable, one run per results folder.

    discbench run studies/digits.yaml                      # local Ray on this machine
    discbench run studies/imagenet_tiny.yaml --data-root /data/imagenet --address auto
    discbench run studies/digits.yaml -o train.epochs=1 --dry-run

Where things live: results/<study>/ (see discbench.results). Each trial works in its own folder
trials/<trial_id>/ (train.fit's checkpoint.pt is there), so resuming does not depend on Ray's
state: a trial whose trial.json says ok/diverged (with the same configuration) is never run
again, every other trial continues from its checkpoint. Ray Tune's own experiment folder
(results/<study>/ray/) is restored with `Tuner.restore` when it holds exactly this set of trials,
and started afresh for the unfinished trials otherwise.

results/<study>/.lock (fcntl) is held for the whole run: a second run on the same folder
refuses to start.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import results
from .study import DEFAULT_STUDY, Study, StudyError, add_override_arguments, load_study, trial_table
from .config import config_differences
from .kinds import TRIAL_KINDS
from .trials import FINISHED, comparable
from .tuning import lock_path

LOCK_FILE = ".lock"
RAY_DIR = "ray"
TUNE_NAME = "tune"
TUNE_PLAN = "tune_plan.json"  # the trial set the Tune experiment in ray/ was created for
STATUS_EVERY_S = 30.0
INTERRUPTED_EXIT = 130


class RunError(RuntimeError):
    """A run that must not start; the message says why and what to do."""


# ----------------------------------------------------------------------------- lock

@dataclass
class StudyLock:
    """results/<study>/.lock held with fcntl.flock; released when the process ends, even by
    SIGKILL (the kernel drops it), so a crashed run never blocks the next one."""

    path: Path
    fd: int | None = None

    def acquire(self) -> "StudyLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except json.JSONDecodeError:
                holder = {}
            os.close(fd)
            folder = self.path.parent
            raise RunError(f"{folder} is in use by discbench run (pid {holder.get('pid', '?')}, started "
                           f"{holder.get('started', '?')} on {holder.get('host', '?')}); wait for it to "
                           f"finish or stop it (Ctrl-C), or use another --results-dir") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "started": results.now(), "host": os.uname().nodename,
                "command": " ".join(sys.argv)}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------- plan

def trial_dict(study: Study, trial, study_path: Path) -> dict[str, Any]:
    """What a Ray trial needs, as plain data (see discbench.trials)."""
    return {"trial_id": trial.trial_id, "kind": trial.kind, "study": study.name,
            "study_path": str(study_path), "trial_config": trial.config.model_dump(mode="json"),
            "resolved": trial.resolved(), "params": trial.params,
            "resources": trial.resources.model_dump()}


def trial_states(study: Study, study_path: Path) -> dict[str, str]:
    """trial_id -> status in the results folder ('pending' when it never started).

    Raises RunError when a stored trial was run with another configuration."""
    states, conflicts = {}, []
    for trial in study.trials:
        row = results.read_trial(study_path / results.TRIALS_DIR / trial.trial_id)
        if row is None:
            states[trial.trial_id] = "pending"
            continue
        stored = comparable(json.loads(row["config"])) if row.get("config") else {}
        differences = config_differences(stored, comparable(trial.resolved()))
        if differences:
            conflicts.append(f"  {trial.trial_id}: " + "; ".join(differences[:4]))
        states[trial.trial_id] = row.get("status") or "pending"
    if conflicts:
        raise RunError(f"{study_path} holds trials run with another configuration:\n" + "\n".join(conflicts)
                       + "\nrun with --restart to delete them and start over, or pick another --results-dir")
    return states


def _stray_trials(study: Study, study_path: Path) -> list[str]:
    known = {t.trial_id for t in study.trials}
    root = study_path / results.TRIALS_DIR
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in known) if root.is_dir() else []


# ----------------------------------------------------------------------------- progress

def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class Progress:
    """Counts and an estimate of the time left, printed as one line per event."""

    total: int
    epochs: dict[str, int]  # trial_id -> epochs it trains (1 for the other kinds)
    concurrency: int
    done: int = 0
    diverged: int = 0
    failed: int = 0
    running: dict[str, float] = field(default_factory=dict)  # trial_id -> start time
    progress: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (epochs at start, now)
    durations: list[float] = field(default_factory=list)
    last_status: float = 0.0

    def say(self, text: str) -> None:
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)

    def started(self, trial_id: str) -> None:
        self.running[trial_id] = time.monotonic()
        self.say(f"started   {trial_id}")

    def resumed(self, trial_id: str, epochs_done: int) -> None:
        self.progress[trial_id] = (epochs_done, epochs_done)
        if epochs_done:
            self.say(f"resumed   {trial_id} from its checkpoint after epoch {epochs_done}")

    def epoch(self, trial_id: str, epoch: int) -> None:
        first, _ = self.progress.get(trial_id, (0, 0))
        self.progress[trial_id] = (first, epoch)

    def finished(self, trial_id: str, row: dict) -> None:
        start = self.running.pop(trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)
        status = row.get("status")
        if status == "diverged":
            self.diverged += 1
            self.say(f"diverged  {trial_id} at {row.get('diverged_at')} (a result: recorded)")
        else:
            self.done += 1
            metric = f"top-1 {row['top1']:.1f} %" if row.get("top1") is not None else "measured"
            self.say(f"finished  {trial_id}: {metric}")
        self.status(force=False)

    def failed_trial(self, trial_id: str, error: str) -> None:
        self.running.pop(trial_id, None)
        self.failed += 1
        self.say(f"FAILED    {trial_id}: {error}")

    def retrying(self, trial_id: str, error: str) -> None:
        self.say(f"retrying  {trial_id} after: {error}")

    def time_left(self) -> float | None:
        """Seconds until the study is done, or None before any epoch or trial has finished.

        A running trial that has logged epochs since it started has the rest of its epochs left at
        its own rate; a waiting trial costs the mean duration of the finished ones, or before any
        has finished, the longest whole-trial estimate of the running ones (rate × its epochs)."""
        now = time.monotonic()
        remaining, whole = [], []
        for trial_id, start in self.running.items():
            first, current = self.progress.get(trial_id, (0, 0))
            total = self.epochs.get(trial_id, 1)
            if current > first:
                per_epoch = (now - start) / (current - first)
                remaining.append(max(0.0, per_epoch * (total - current)))
                whole.append(per_epoch * (total - first))
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        if mean is None and not remaining:
            return None
        pending = self.total - self.done - self.diverged - self.failed - len(self.running)
        per_trial = mean if mean is not None else max(whole)
        return (sum(remaining) + pending * per_trial) / max(1, self.concurrency)

    def status(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self.last_status < 1.0:
            return
        self.last_status = now
        pending = self.total - self.done - self.diverged - self.failed - len(self.running)
        left = self.time_left()
        eta = f"about {_duration(left)} left" if left is not None else "time left: after the first epoch"
        self.say(f"status    {len(self.running)} running, {pending} waiting, {self.done} done, "
                 f"{self.diverged} diverged, {self.failed} failed; {eta}")


# ----------------------------------------------------------------------------- Ray

def _quiet_ray_environment() -> None:
    """No usage statistics, no network lookups, no metrics agent chatter, Tune's SIGINT
    handling off (Ctrl-C reaches us as KeyboardInterrupt)."""
    for key, value in {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
        "RAY_enable_metrics_collection": "0",
    }.items():
        os.environ.setdefault(key, value)


# Torch's own CPU code picks its kernels per machine: ATen's vectorised ops by the widest
# instruction set (AVX-512 or AVX2), MKL's GEMMs and oneDNN by CPU model, and each width sums in
# another order. Pinned to their AVX2 paths (MKL_CBWR is MKL's own switch for results that
# reproduce across CPUs), the same torch code runs on every x86-64 machine with AVX2, AVX-512 ones
# included; the CPU scan kernel gives the same bits on every build anyway (csrc/ds_simd.h). Set
# before Ray starts, so the trial workers (children of this process on a local instance) start
# with them; a value the user set is kept.
REPRODUCIBLE_CPU_PATHS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_paths() -> None:
    """REPRODUCIBLE_CPU_PATHS for this process's children, on a CPU that has AVX2 and FMA (the
    flags Linux reports; elsewhere nothing is pinned)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if {"avx2", "fma"} <= flags:
        for key, value in REPRODUCIBLE_CPU_PATHS.items():
            os.environ.setdefault(key, value)


def _init_ray(address: str | None, num_cpus: int | None) -> Any:
    import logging

    import ray

    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  log_to_driver=False, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # A local instance enables Ray's token authentication by default and says so at every
        # start; nothing for the user to do, so that one notice is not shown. A cluster's is.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # "local": always a new instance on this machine, never a cluster found on it by chance
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
    return ray


def _check_cluster(study: Study, ray: Any) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse up front."""
    available = ray.cluster_resources()
    cpus, gpus = available.get("CPU", 0), available.get("GPU", 0)
    for trial in study.trials:
        r = trial.resources
        need_cpu, need_gpu = r.cpus * r.workers, r.gpus * r.workers
        if need_gpu > gpus:
            raise RunError(f"trial {trial.trial_id} asks for {need_gpu:g} GPU(s) (resources.gpus × workers) "
                           f"but the Ray cluster has {gpus:g}; run on a GPU machine or pass "
                           f"-o resources.gpus=0 -o train.device=cpu")
        if need_cpu > cpus:
            raise RunError(f"trial {trial.trial_id} asks for {need_cpu:g} CPU(s) (resources.cpus × workers) "
                           f"but the Ray cluster has {cpus:g}; lower resources.cpus")


def _trial_resources(config: dict) -> dict[str, float]:
    r = config["trial"]["resources"]
    if r["workers"] > 1:
        # The Ray Train workers ask the cluster for their own CPUs/GPUs (Ray Train's placement
        # group, not this trial's); the trial itself only waits for them, so it holds nothing
        # (anything it held would be missing when the workers ask for all CPUs). Ray wants a
        # non-empty request: one byte of memory.
        return {"cpu": 0, "memory": 1}
    return {"cpu": r["cpus"], "gpu": r["gpus"]}


def _trainable(config: dict) -> None:
    """The Tune function trainable: one trial (its events go back as Tune results)."""
    import torch
    from ray import tune

    from .kinds import Events
    from .trials import run_trial

    trial = config["trial"]
    torch.set_num_threads(max(1, int(trial["resources"]["cpus"])))
    events = Events(
        started=lambda epochs_done: tune.report({"event": "start", "epochs_done": epochs_done}),
        epoch=lambda record: tune.report({"event": "epoch", **record}),
    )
    row = run_trial(trial, events)
    tune.report({"event": "finished", "status": row["status"]})


class _CtrlC:
    """Ctrl-C during tuner.fit(), made to stick: the handler records it and raises KeyboardInterrupt
    as Python's own does, and the callback Tune calls at every step of its loop raises it again
    while it is recorded. A KeyboardInterrupt raised wherever the signal happened to land can be
    swallowed inside Tune's loop: in two fresh-clone test runs the study went on to finish both
    trials after its Ctrl-C."""

    def __init__(self):
        self.requested = False  # a plain flag: Tune pickles its callbacks, and both sides run in the main thread

    def _handle(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def run(self, fit) -> None:
        """fit() with this handler on SIGINT (main thread only); KeyboardInterrupt if it was pressed."""
        if threading.current_thread() is not threading.main_thread():
            return fit()
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            fit()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.check()  # pressed, but Tune's loop ended normally


def _progress_callback(progress: Progress, study_path: Path, ctrl_c: _CtrlC) -> Any:
    """A Ray Tune callback that feeds Progress, consolidates after each finished trial and
    re-raises a recorded Ctrl-C at every step (defined here because importing ray.tune at module
    level would slow every command)."""
    from ray import tune

    class Callback(tune.Callback):
        def _id(self, trial) -> str:
            return trial.config["trial"]["trial_id"]

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.started(self._id(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            event = result.get("event")
            if event == "start":
                progress.resumed(self._id(trial), int(result["epochs_done"]))
            elif event == "epoch":
                progress.epoch(self._id(trial), int(result["epoch"]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            row = results.read_trial(study_path / results.TRIALS_DIR / self._id(trial)) or {}
            progress.finished(self._id(trial), row)
            results.consolidate(study_path)

        def on_trial_recover(self, iteration, trials, trial, **info):
            row = results.read_trial(study_path / results.TRIALS_DIR / self._id(trial)) or {}
            progress.retrying(self._id(trial), row.get("error") or "an error")

        def on_trial_error(self, iteration, trials, trial, **info):
            row = results.read_trial(study_path / results.TRIALS_DIR / self._id(trial)) or {}
            progress.failed_trial(self._id(trial), row.get("error") or "error (see Ray's log)")
            results.consolidate(study_path)

        def on_step_end(self, iteration, trials, **info):
            ctrl_c.check()
            if time.monotonic() - progress.last_status >= STATUS_EVERY_S:
                progress.status()

    return Callback()


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]


def _plan_digest(trials: list[dict]) -> str:
    return hashlib.sha1(json.dumps(trials, sort_keys=True).encode()).hexdigest()


def _tune(study: Study, trials: list[dict], study_path: Path, progress: Progress,
          max_concurrent: int | None) -> None:
    """Run `trials` (trial dicts) with Ray Tune. Ray's experiment in ray/ is restored
    (Tuner.restore) when it was created for exactly these trials, i.e. the previous run was
    interrupted before any trial finished; otherwise a new experiment runs the unfinished trials."""
    from ray import tune

    ray_dir = (study_path / RAY_DIR).resolve()
    experiment = ray_dir / TUNE_NAME
    plan_file = ray_dir / TUNE_PLAN
    trainable = tune.with_resources(_trainable, _trial_resources)
    ctrl_c = _CtrlC()
    callbacks = [_progress_callback(progress, study_path, ctrl_c)]
    run_config = tune.RunConfig(
        name=TUNE_NAME, storage_path=str(ray_dir), verbose=0, callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=study.spec.retries))
    plan = _plan_digest(trials)
    stored_plan = plan_file.read_text().strip() if plan_file.exists() else None
    if stored_plan == plan and tune.Tuner.can_restore(str(experiment)):
        progress.say(f"restoring Ray Tune's experiment in {experiment}")
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True,
                                   restart_errored=False)
    else:
        if experiment.exists():
            shutil.rmtree(experiment)  # another trial set: the trial folders carry the state
        ray_dir.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(plan)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            # reuse_actors: a finished trial's worker process runs the next trial that asks for the same
            # resources, so imports, the kernel load and generated datasets (cached per process) are
            # paid once per worker, not per trial. Each trial seeds everything it draws from, so what a
            # trial computes does not depend on what ran before it in the process.
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent, reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=run_config)
    ctrl_c.run(tuner.fit)


# ----------------------------------------------------------------------------- command

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", nargs="?", default=DEFAULT_STUDY,
                        help="a study file (e.g. studies/imagenet_tiny.yaml) or a shipped study's name; "
                             f"default: {DEFAULT_STUDY}, which runs anywhere in minutes")
    add_override_arguments(parser)
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where results go: <results-dir>/<study>/ (default: ./results)")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (e.g. auto or 10.0.0.1:6379); default: start "
                             "Ray on this machine")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="at most N trials at once (default: the study's max_concurrent, else "
                             "as many as the resources allow)")
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N",
                        help="CPUs of the local Ray instance (default: all of this machine's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials and a measured cost estimate; run nothing")
    parser.add_argument("--restart", action="store_true",
                        help="delete this study's results and start over (asks first; see --yes)")
    parser.add_argument("--yes", action="store_true", help="with --restart: do not ask")


def _concurrency(study: Study, max_concurrent: int | None, cpus: float) -> int:
    per_trial = max(t.resources.cpus * t.resources.workers for t in study.trials)
    fit = max(1, int(cpus // per_trial))
    limit = max_concurrent or study.spec.max_concurrent
    return min(fit, limit) if limit else fit


def _dry_run(study: Study, study_path: Path, max_concurrent: int | None, num_cpus: int | None) -> int:
    from .trials import estimate_seconds

    states = trial_states(study, study_path) if study_path.exists() else {}
    lines = trial_table(study)
    print(f"study {study.name!r} ({study.spec.kind}): {len(study.trials)} trials -> {study_path}")
    print(lines[0] + "  state")
    for trial, line in zip(study.trials, lines[1:]):
        print(line + "  " + states.get(trial.trial_id, "pending"))
    todo = [t for t in study.trials if states.get(t.trial_id) not in FINISHED]
    if not todo:
        print("every trial has finished; nothing to run")
        return 0
    print(f"\nmeasuring the cost on this machine ({len(todo)} trials to run) …", flush=True)
    estimate = estimate_seconds(study.spec.kind, todo)
    parallel = _concurrency(study, max_concurrent, num_cpus or os.cpu_count() or 1)
    print("measured: " + "\n          ".join(estimate.how))
    if any(t.resources.gpus > 0 for t in todo):
        import torch

        if not torch.cuda.is_available():
            print("note: the study asks for GPUs and this machine has none: the timings above are its "
                  "CPU's; run --dry-run on the GPU machine for a GPU estimate")
    print(f"estimate: {_duration(estimate.seconds)} of trial time; with {parallel} trial(s) at once "
          f"on {num_cpus or os.cpu_count()} CPUs about {_duration(estimate.seconds / parallel)}, plus Ray's "
          f"start-up and a worker start per trial (seconds each, not measured)")
    return 0


def _restart(study: Study, study_path: Path, yes: bool) -> bool:
    """Delete results/<study> after saying what goes; True when deleted (or nothing there)."""
    entries = sorted(p for p in study_path.iterdir() if p.name != LOCK_FILE) if study_path.exists() else []
    if not entries:
        return True
    trials = list((study_path / results.TRIALS_DIR).glob("*/trial.json"))
    size = sum(f.stat().st_size for f in study_path.rglob("*") if f.is_file())
    print(f"--restart deletes {study_path}: {len(trials)} trial folders (results, checkpoints, epoch logs), "
          f"the Parquet tables, study.json and Ray's state ({size / 2**20:.1f} MiB)")
    if not yes:
        if not sys.stdin.isatty():
            print("add --yes to confirm", file=sys.stderr)
            return False
        if input("delete? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return False
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return True


def run_command(args: argparse.Namespace) -> int:
    try:
        study = load_study(args.study, args.override, args.data_root)
    except StudyError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    study_path = (Path(args.results_dir) / study.name).resolve()
    if args.dry_run:
        try:
            return _dry_run(study, study_path, args.max_concurrent, args.num_cpus)
        except RunError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    lock = StudyLock(study_path / LOCK_FILE)
    try:
        lock.acquire()
    except RunError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        if args.restart and not _restart(study, study_path, args.yes):
            return 1
        return _run(study, study_path, args)
    except RunError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        lock.release()


def _check_data(study: Study) -> None:
    """Every dataset is where the study says (before any trial starts)."""
    from .data import DatasetError, load_splits

    seen = set()
    for trial in study.trials:
        if not TRIAL_KINDS[trial.kind].trains:
            continue
        data = trial.config.data
        key = data.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        try:
            load_splits(data)
        except DatasetError as exc:
            raise RunError(f"{study.path}: {exc}") from None


def _run(study: Study, study_path: Path, args: argparse.Namespace) -> int:
    states = trial_states(study, study_path)
    if not args.address:
        _check_data(study)
    stray = _stray_trials(study, study_path)
    if stray:
        print(f"note: {study_path} also holds {len(stray)} trial(s) this study does not define "
              f"({', '.join(stray[:3])}{', …' if len(stray) > 3 else ''}); they stay in the tables "
              f"(--restart removes them)")
    results.write_study_meta(study_path, study.name, study.source, extra={
        "study_file": str(study.path), "kind": study.spec.kind, "description": study.spec.description,
        "overrides": study.overrides, "trial_ids": [t.trial_id for t in study.trials],
        "tuning_lock": study.lock_text})
    done = [t for t in study.trials if states[t.trial_id] in FINISHED]
    todo = [t for t in study.trials if states[t.trial_id] not in FINISHED]
    resumed = [t for t in todo if states[t.trial_id] in ("running", "failed")]
    print(f"study {study.name!r}: {len(study.trials)} trials -> {study_path}")
    for note in study.notes:
        print(f"  note: {note}")
    if study.tuned is not None:
        print(f"  tuned: each arm at its values from {lock_path(study.path)} (discbench tune at {study.tuned.commit[:12]})")
    elif study.spec.tune is not None:
        print(f"  untuned: no {lock_path(study.path)} yet (discbench tune {study.path} writes it); "
              f"every arm runs at the study's own values")
    if done:
        print(f"  {len(done)} already finished (not re-run)")
    if resumed:
        print(f"  {len(resumed)} interrupted or failed before: they continue from their last checkpoint")
    if not todo:
        results.consolidate(study_path)
        print(f"every trial has finished; results in {study_path}")
        return 0

    _quiet_ray_environment()
    pin_cpu_paths()
    import ray as ray_module

    # A Ray instance this process already had (e.g. a caller's) stays up after the run.
    started_ray = not ray_module.is_initialized()
    ray = _init_ray(args.address, args.num_cpus)
    try:
        _check_cluster(study, ray)
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = _concurrency(study, args.max_concurrent, cpus)
        epochs = {t.trial_id: (t.config.train.resolved().epochs if TRIAL_KINDS[t.kind].trains else 1) for t in todo}
        progress = Progress(total=len(todo), epochs=epochs, concurrency=concurrency)
        trial_dicts = [trial_dict(study, t, study_path) for t in todo]
        start = time.monotonic()
        try:
            _tune(study, trial_dicts, study_path, progress, args.max_concurrent or study.spec.max_concurrent)
        except KeyboardInterrupt:
            if started_ray:  # stop the trials before gathering what they wrote
                ray.shutdown()
                started_ray = False
            results.consolidate(study_path)
            print("\ninterrupted; run the same command again to resume "
                  "(finished trials are kept, the others continue from their checkpoints)", flush=True)
            return INTERRUPTED_EXIT
        final = results.consolidate(study_path)
    finally:
        if started_ray:
            ray.shutdown()
    statuses = final.trials.set_index("trial_id")["status"].reindex([t.trial_id for t in study.trials])
    counts = statuses.value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in results.STATUSES if counts.get(s))
    print(f"study {study.name!r} done in {_duration(time.monotonic() - start)}: {summary}; "
          f"results in {study_path}")
    failed = statuses[statuses == "failed"].index.tolist()
    if failed:
        print(f"failed trials (error and traceback in trials.parquet / trial.json): {', '.join(failed)}; "
              f"run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


__all__ = ["configure_parser", "run_command", "StudyLock", "RunError", "trial_states", "Progress"]
