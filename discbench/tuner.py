"""`discbench tune STUDY`: the tuning stage on Ray Tune (the section and the lock file it writes:
discbench/tuning.py).

For every arm in turn (a trial of the study without its seed), Ray Tune's Tuner runs the arm's
candidates: each trains the arm's configuration with the candidate's values for the study's
epochs and reports its validation top-1 after every epoch; ASHA stops the weaker ones at its rungs,
within the arm (methods do not compete for the budget). Every arm gets the same candidates (one
seeded search generator per arm), the same epochs and the same rungs. The arm's choice is the
candidate with the best validation top-1 among those that trained every epoch (`choose`).
Candidates train with `train.fit(evaluate_test=False)`: the test split is never built.

Finished arms are kept in results/<study>/tuning/<arm>.json, with the plan, the commit and the
seconds they were tuned under: an interrupted `discbench tune` keeps those of the same plan and
commit (so a lock never names a commit its arms were not tuned at) and starts the arm it was on
afresh. The lock file is written at the end; its tuning time counts the kept arms' own time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import results
from .runner import RunError, StudyLock, _duration, _init_ray, _quiet_ray_environment, pin_cpu_paths
from .study import StudyError, add_override_arguments, deep_merge, load_study, nest_dotted
from .tuning import METRIC, ArmChoice, Candidate, TuneSpec, TuningLock, lock_path

TUNING_DIR = "tuning"  # results/<study>/tuning/: the candidates' folders, Ray's state, finished arms
OUTCOME_FILE = "outcome.json"  # in a candidate's folder once it ran to its end (finished or diverged)


def candidate_config(arm_config: dict[str, Any], values: dict[str, Any], seed: int) -> dict[str, Any]:
    """The trial config (as a dict) a candidate trains: the arm's, with the candidate's values
    (dotted keys) and the tuning seed."""
    return {**deep_merge(arm_config, nest_dotted(values)), "seed": seed}


def train_candidate(trial_config: dict[str, Any], workdir: Path, report, threads: int = 1) -> dict[str, Any]:
    """Train one candidate without ever building the test split (train.fit(evaluate_test=False));
    report({"epoch", "val_top1", "train_loss"}) after every epoch. Returns fit's summary."""
    import torch

    from .allocator import retain_freed_memory
    from .config import TrialConfig
    from .train import fit

    torch.set_num_threads(threads)
    retain_freed_memory()
    cfg = TrialConfig.model_validate(trial_config)
    return fit(cfg, workdir, evaluate_test=False, on_epoch=lambda r: report(
        {"epoch": r["epoch"], METRIC: r["top1"], "train_loss": r["train_loss"]}))


def _trainable(config: dict) -> None:
    """Ray Tune's function trainable: one candidate of one arm."""
    from ray import tune

    arm = config["arm"]
    values = {key: config[key] for key in arm["keys"]}
    workdir = Path(arm["folder"]) / _candidate_name(values)
    outcome = train_candidate(candidate_config(arm["config"], values, arm["seed"]), workdir, tune.report,
                              threads=max(1, int(arm["cpus"])))
    # how it ended, for _candidates (a candidate ASHA stops never gets here)
    (workdir / OUTCOME_FILE).write_text(json.dumps({"status": outcome["status"],
                                                    "epochs_done": outcome["epochs_done"]}))


def _candidate_name(values: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
             for k, v in values.items()]
    return "_".join(parts).replace("/", "-")[:120]


def _candidates(result_grid, keys: list[str], folder: Path, epochs: int) -> list[Candidate]:
    """Each candidate of a finished Tuner, in the search's order: its last reported validation
    top-1, the epochs it trained and how it ended."""
    out = []
    for result in result_grid:
        values = {key: result.config[key] for key in keys}
        last = result.metrics or {}
        score = last.get(METRIC)
        trained = int(last.get("epoch") or 0)
        ended = folder / _candidate_name(values) / OUTCOME_FILE
        if result.error is not None:
            status = "failed"
        elif ended.exists() and json.loads(ended.read_text())["status"] == "diverged":
            status = "diverged"
        else:
            status = "finished" if trained >= epochs else "stopped"
        out.append(Candidate(values=values, val_top1=float(score) if score is not None else None,
                             epochs=trained, status=status))
    return out


def choose(candidates: list[Candidate]) -> Candidate:
    """The candidate with the best validation top-1 among those that trained every epoch (the
    first such in the search's order on a tie). ValueError if none did."""
    finished = [c for c in candidates if c.status == "finished" and c.val_top1 is not None]
    if not finished:
        raise ValueError("no candidate trained every epoch (all were stopped, diverged or failed)")
    best = max(c.val_top1 for c in finished)
    return next(c for c in finished if c.val_top1 == best)


def _say(text: str) -> None:
    print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


def _tune_arm(arm_id: str, trial, spec: TuneSpec, folder: Path, epochs: int, concurrency: int) -> list[Candidate]:
    """Ray Tune over one arm's candidates; returns them in the search's order."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    keys = list(spec.space)
    arm = {"config": trial.config.model_dump(mode="json"), "keys": keys, "seed": spec.seed,
           "folder": str(folder / arm_id), "cpus": trial.resources.cpus}
    points = None
    if spec.search == "grid":
        space = {key: tune.grid_search(d.choice) for key, d in spec.space.items()}
        samples = 1
    else:
        space = {key: d.ray() for key, d in spec.space.items()}
        samples = spec.samples
        if spec.search == "stratified":
            points = spec.stratified_points()  # Ray tries these instead of drawing
    scheduler = None
    if spec.asha is not None:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(spec.asha.grace_period, epochs),
                                  reduction_factor=spec.asha.reduction_factor)
    total = spec.candidates_per_arm()

    class Report(tune.Callback):
        done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            Report.done += 1
            last = trial.last_result or {}
            score = last.get(METRIC)
            text = f"val top-1 {score:.2f} %" if isinstance(score, (int, float)) else "no score (diverged)"
            _say(f"  {arm_id} candidate {Report.done}/{total} {_candidate_name({k: trial.config[k] for k in keys})}: "
                 f"{text} after epoch {last.get('epoch', 0)} of {epochs}")

    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": trial.resources.cpus, "gpu": trial.resources.gpus}),
        param_space={"arm": arm, **space},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=samples, scheduler=scheduler, reuse_actors=True,
            # one seeded generator per arm: every arm draws the same candidates in the same order
            search_alg=BasicVariantGenerator(random_state=spec.search_seed, max_concurrent=concurrency,
                                             points_to_evaluate=points)),
        run_config=tune.RunConfig(name=arm_id, storage_path=str((folder / "ray").resolve()), verbose=0,
                                  callbacks=[Report()], failure_config=tune.FailureConfig(max_failures=0)))
    return _candidates(tuner.fit(), keys, Path(arm["folder"]), epochs)


def tune_study(study, results_dir: Path, max_concurrent: int | None = None, num_cpus: int | None = None,
               address: str | None = None) -> Path:
    """Run the tuning stage of `study` (loaded without its lock) and write its lock file.
    Returns the lock file's path."""
    spec: TuneSpec = study.spec.tune
    if spec is None:
        raise RunError(f"{study.path}: has no tune: section (see discbench/tuning.py for its keys)")
    arms: dict[str, Any] = {}
    for trial in study.trials:
        arms.setdefault(trial.arm_id, trial)
    epoch_counts = {t.config.train.resolved().epochs for t in arms.values()}
    if len(epoch_counts) != 1:
        raise RunError(f"{study.path}: the arms train for different epochs ({sorted(epoch_counts)}); tuning "
                       f"gives every arm the same budget, so they must agree")
    epochs = epoch_counts.pop()
    unheld = [arm_id for arm_id, t in arms.items() if t.config.data.val_fraction == 0]
    if unheld:
        raise RunError(f"{study.path}: data.val_fraction is 0 for {', '.join(unheld)}: tuning reads the validation "
                       f"split only, so it needs one (e.g. data.val_fraction: 0.1)")
    folder = (Path(results_dir) / study.name / TUNING_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    lock = StudyLock(folder / ".lock")
    lock.acquire()
    _quiet_ray_environment()
    pin_cpu_paths()
    import ray as ray_module

    started_ray = not ray_module.is_initialized()
    ray = _init_ray(address, num_cpus)
    start = time.monotonic()
    provenance = results.provenance()  # the checkout the candidates train with, read before they start
    commit = provenance["git_commit"]
    kept_seconds = 0.0  # the tuning time of arms kept from an earlier, interrupted invocation
    chosen: dict[str, ArmChoice] = {}
    plan = json.dumps({"tune": spec.model_dump(mode="json"), "epochs": epochs}, sort_keys=True)
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = max(1, min(max_concurrent or study.spec.max_concurrent or 10**6,
                                 int(cpus // max(t.resources.cpus for t in arms.values()))))
        per_arm = spec.candidates_per_arm()
        _say(f"tuning {study.name!r}: {len(arms)} arms × {per_arm} candidates, up to {epochs} epochs each"
             f"{', ASHA' if spec.asha else ''}; {concurrency} at once -> {folder}")
        spent: list[float] = []
        for index, (arm_id, trial) in enumerate(arms.items(), start=1):
            saved = folder / f"{arm_id}.json"
            if saved.exists():
                stored = json.loads(saved.read_text())
                same = stored.get("plan") == plan and stored.get("config") == trial.config.model_dump(mode="json")
                if same and stored.get("commit") == commit:
                    chosen[arm_id] = ArmChoice.model_validate(stored["choice"])
                    kept_seconds += stored["seconds"]
                    _say(f"arm {index}/{len(arms)} {arm_id}: already tuned ({saved}); kept")
                    continue
                if same:
                    _say(f"arm {index}/{len(arms)} {arm_id}: tuned at commit {stored.get('commit', 'unknown')}, "
                         f"this checkout is at {commit}: tuned again")
            left = (f"; about {_duration(sum(spent) / len(spent) * (len(arms) - index + 1))} left"
                    if spent else "")
            _say(f"arm {index}/{len(arms)} {arm_id}{left}")
            arm_start = time.monotonic()
            # an arm interrupted part-way starts over: its candidates' checkpoints would resume
            # without reporting the epochs they already had, which ASHA and the choice need
            shutil.rmtree(folder / arm_id, ignore_errors=True)
            candidates = _tune_arm(arm_id, trial, spec, folder, epochs, concurrency)
            spent.append(time.monotonic() - arm_start)
            try:
                best = choose(candidates)
            except ValueError as exc:
                raise RunError(f"arm {arm_id}: {exc}; widen or move the search space") from None
            choice = ArmChoice(method=trial.label, chosen=best.values, val_top1=best.val_top1,
                               epochs_spent=sum(c.epochs for c in candidates), candidates=candidates)
            chosen[arm_id] = choice
            results.atomic_write_text(saved, json.dumps({"plan": plan, "config": trial.config.model_dump(mode="json"),
                                                          "commit": commit, "seconds": round(spent[-1], 1),
                                                          "choice": choice.model_dump(mode="json")}, indent=2))
            _say(f"arm {arm_id}: chose {_candidate_name(best.values)} (val top-1 {best.val_top1:.2f} %)")
    finally:
        if started_ray:
            ray.shutdown()
        lock.release()
    lock_file = TuningLock(study=study.name, created=results.now(), commit=commit,
                           device=provenance["device"], tune=spec, epochs=epochs,
                           tuning_seconds=round(time.monotonic() - start + kept_seconds, 1), arms=chosen)
    path = lock_path(study.path)
    header = (f"# Written by `discbench tune {study.path}`: each arm's chosen values, from validation top-1\n"
              f"# only (the test split is never built while tuning). Regenerate it; do not edit it.\n")
    results.atomic_write_text(path, header + yaml.safe_dump(lock_file.model_dump(mode="json"), sort_keys=False))
    _say(f"wrote {path} ({len(chosen)} arms, {_duration(time.monotonic() - start)})")
    return path


# ----------------------------------------------------------------------------- command


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="a study file with a tune: section, or a shipped study's name")
    add_override_arguments(parser)
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where the candidates train: <results-dir>/<study>/tuning/ (default: ./results)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: Ray on this machine)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="at most N candidates at once (default: as many as the CPUs allow)")
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N",
                        help="CPUs of the local Ray instance (default: all of this machine's)")


def run_command(args: argparse.Namespace) -> int:
    try:
        study = load_study(args.study, args.override, args.data_root, apply_lock=False)
        tune_study(study, args.results_dir, args.max_concurrent, args.num_cpus, args.address)
    except (StudyError, RunError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


__all__ = ["tune_study", "train_candidate", "candidate_config", "choose", "configure_parser", "run_command"]
