"""`discbench bench train`: one training step of a sequence model against parameter-matched references.

What a user deciding between a selective SSM and a GRU on a CPU wants to know: how long one
training step takes, at equal parameter count, on the data and recipe a trial uses. The step
timed is the trial's own (`train.train_step`: batch from the trial's loader, forward, loss,
backward, gradient clipping, AdamW, per-update schedule), built from a study's trial (default:
the default study's first trial) with the length, batch, method (default zoh/paper, the reports'
baseline) and model changed as asked.

Each reference (a registered sequence model without a discretization, e.g. `seqgru_micro`) is
built at the width (its class's `width_arg`) whose parameter count is closest to the model's.
The model's and the references' steps alternate (one of each per round, after warm-up steps), so
load from other processes falls on all alike; the ratio is the model's median step time over
the reference's (below 1: the model trains faster). The header states the threads, the CPU
paths torch uses, and the load average before and after; `--profile-rows N` adds
torch.profiler's top operators of the model's step per length.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
from typing import Callable

import torch

from .allocator import allocator_setting, retain_freed_memory
from .bench_model import flip_path_run, interleaved_times, positive_ints, print_profile, profile_rows

WARMUP_STEPS = 3  # untimed steps per model before the rounds (first-call allocations, kernel build)


def reference_names() -> list[str]:
    """The registered sequence models without a discretization (the non-SSM references) whose class
    states a `width_arg`, one name per class: the bench sets each one's width itself, so two sizes
    of a class are one reference."""
    import timm

    from .models import family_names, model_info

    names, classes = [], set()
    for name in family_names("sequence"):
        cls = type(timm.create_model(name, num_classes=2))
        if not model_info(name).discretized and hasattr(cls, "width_arg") and cls not in classes:
            names.append(name)
            classes.add(cls)
    return names


def base_trial(study: str):
    """The first trial of `study` (a file or a shipped study's name): its data, model and recipe."""
    from .study import load_study

    return load_study(study).trials[0].config


def trial_config(base, *, model: str, kwargs: dict, method: str | None, length: int, batch: int):
    """`base` (a TrialConfig) with the model, its kwargs, the method, length and batch replaced, validated."""
    from .config import TrialConfig

    values = base.model_dump(mode="json")
    values["model"].update(name=model, kwargs=kwargs)
    values["data"].update(seq_length=length, batch_size=batch)
    if method is not None:
        values["method"], values["variant"] = method.split("/")
    values["measure"].update(eval_lengths=[], throughput=False)
    return TrialConfig.model_validate(values)


def parameter_count(cfg) -> int:
    """Parameters of the trial's model as the trial builds it."""
    from .data import DATASETS, load_splits
    from .train import build_model

    # The registry knows the classes; only a dataset that counts them in the user's files is loaded.
    classes = DATASETS[cfg.data.dataset].classes(cfg.data) or load_splits(cfg.data).num_classes
    model = build_model(cfg, classes, cfg.train.resolved())
    return sum(p.numel() for p in model.parameters())


def matched_reference(base, reference: str, target: int, length: int, batch: int) -> tuple[dict, int]:
    """({width_arg: w}, parameters) of `reference` at the width whose parameter count is closest to target."""
    import timm

    probe = timm.create_model(reference, num_classes=2)
    width_arg = getattr(type(probe), "width_arg", None)
    if width_arg is None:
        raise ValueError(f"reference {reference!r} states no width_arg to match parameters with")

    @functools.cache  # the search and the final pick ask for the same widths again
    def count(width: int) -> int:
        return parameter_count(trial_config(base, model=reference, kwargs={width_arg: width}, method=None,
                                            length=length, batch=batch))
    low, high = 1, 2
    while count(high) < target:
        low, high = high, high * 2
    while high - low > 1:  # parameters grow with the width: the last width below target and the first above
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    best = min((low, high), key=lambda w: abs(count(w) - target))
    return {width_arg: best}, count(best)


def step_runner(cfg) -> tuple[Callable[[], None], torch.nn.Module]:
    """(one `train_step` of the trial `cfg` per call, on its loader's batches in order (cycling);
    the model it trains)."""
    from .train import Workers, data_loaders, setup_training, train_step

    device = torch.device("cpu")
    recipe = cfg.train.resolved()
    loaders = data_loaders(cfg, recipe, Workers(), device)
    run = setup_training(cfg, recipe, loaders, Workers(), device)
    run.train_model.train()
    state = {"batches": iter(loaders.train), "updates": 0}

    def step() -> None:
        try:
            images, labels = next(state["batches"])
        except StopIteration:
            state["batches"] = iter(loaders.train)
            images, labels = next(state["batches"])
        state["updates"] += 1
        train_step(run, recipe, images, labels, state["updates"], Workers(), device)
    return step, run.model


def time_length(base, model: str, kwargs: dict, method: str | None, references: list[str], length: int,
                batch: int, repeats: int, profile_top: int, flip_path: bool = False) -> dict:
    """One record for `length`: the model's and each matched reference's median/min step (ms), ratios, profile.

    flip_path: also time the model's steps with every mixer off its CPU fast path (bench model's
    --flip-path) in the same rounds, as model_flip_ms_median and fast_speedup (flip / fast)."""
    cfg = trial_config(base, model=model, kwargs=kwargs, method=method, length=length, batch=batch)
    params = parameter_count(cfg)
    matched = [(name, *matched_reference(base, name, params, length, batch)) for name in references]
    model_step, trained = step_runner(cfg)
    runs = [model_step] + [step_runner(trial_config(base, model=name, kwargs=width, method=None, length=length,
                                                    batch=batch))[0]
                           for name, width, _ in matched]
    if flip_path:
        runs.append(flip_path_run(trained, model_step))
    for run in runs:
        for _ in range(WARMUP_STEPS - 1):  # interleaved_times adds one more
            run()
    times = interleaved_times(runs, repeats)
    record = {"model": model, "kwargs": kwargs, "method": cfg.method_key if method else None, "length": length,
              "batch": batch, "params": params, "repeats": repeats, "threads": torch.get_num_threads(),
              "model_ms_median": statistics.median(times[0]), "model_ms_min": min(times[0]), "references": []}
    for (name, width, ref_params), ref_times in zip(matched, times[1:]):
        median = statistics.median(ref_times)
        record["references"].append({"name": name, "width": width, "params": ref_params, "ms_median": median,
                                     "ms_min": min(ref_times), "ratio": record["model_ms_median"] / median})
    if flip_path:
        record["model_flip_ms_median"] = statistics.median(times[-1])
        record["fast_speedup"] = record["model_flip_ms_median"] / record["model_ms_median"]
    record["profile"] = profile_rows(runs[0], profile_top) if profile_top > 0 else []
    return record


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", default=None,
                        help="the study whose first trial gives the data, model and recipe (default: the default "
                             "study)")
    parser.add_argument("--model", default=None, help="a registered sequence model (default: the study's)")
    parser.add_argument("--model-kwargs", default=None,
                        help="the model's kwargs as YAML, e.g. '{conv: none}' (default: the study's when the model "
                             "is the study's, else none)")
    parser.add_argument("--method", default=None, help="method/variant (default: the reports' baseline, zoh/paper)")
    parser.add_argument("--lengths", default="40,144,400", help="comma-separated sequence lengths (default 40,144,400)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the study's)")
    parser.add_argument("--references", default=None,
                        help="comma-separated non-SSM reference models, each matched in parameters (default: all "
                             "registered ones)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a 1-CPU trial runs)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per model and length (default 30)")
    parser.add_argument("--profile-rows", type=int, default=12,
                        help="torch.profiler's top operators of the model's step per length (default 12; 0: none)")
    parser.add_argument("--flip-path", action="store_true",
                        help="also time the model with its mixers off the CPU fast path, in the same rounds")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush subnormal floats to zero for every model (torch.set_flush_denormal); trials do "
                             "not, and a GRU's backward over long sequences slows down on them")
    parser.add_argument("--json", action="store_true", help="one JSON record per length instead of a table")


def _resolve(args: argparse.Namespace):
    """(base trial, model, kwargs, method, references, lengths), or ValueError naming the bad flag."""
    import yaml

    from .methods import get_method
    from .models import model_info
    from .report.study_view import BASELINE_KEY
    from .study import DEFAULT_STUDY

    base = base_trial(args.study or DEFAULT_STUDY)
    model = args.model or base.model.name
    if model_info(model).modality != "sequence":
        raise ValueError(f"--model {model!r} is not a sequence model; bench train times sequence models")
    if args.model_kwargs is not None:
        kwargs = yaml.safe_load(args.model_kwargs) or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"--model-kwargs must be a YAML mapping, got {args.model_kwargs!r}")
    else:
        kwargs = dict(base.model.kwargs) if model == base.model.name else {}
    method = None
    if model_info(model).discretized:  # default: the baseline every report compares against
        spec = get_method(args.method or BASELINE_KEY, None if "/" in (args.method or "/") else "canonical")
        method = spec.key
    if args.flip_path and not model_info(model).discretized:
        raise ValueError(f"--flip-path: {model} has no mixers with a CPU fast path")
    known = reference_names()
    references = known if args.references is None else [r.strip() for r in args.references.split(",") if r.strip()]
    bad = [r for r in references if r not in known]
    if bad:
        raise ValueError(f"--references: unknown {', '.join(bad)}; registered references: {', '.join(known)}")
    for flag, value in (("--threads", args.threads), ("--repeats", args.repeats), ("--batch", args.batch or 1)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    return base, model, kwargs, method, references, positive_ints(args.lengths, "--lengths")


def run_train_command(args: argparse.Namespace) -> int:
    from .runner import pin_cpu_paths
    from .study import StudyError

    pin_cpu_paths()  # the CPU paths a trial runs on; read by torch at its first kernel call
    try:
        base, model, kwargs, method, references, lengths = _resolve(args)
    except (ValueError, StudyError) as exc:
        print(f"discbench bench train: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    flushed = torch.set_flush_denormal(True) if args.flush_denormal else False
    if args.flush_denormal and not flushed:
        print("discbench bench train: --flush-denormal: this CPU cannot flush subnormals", file=sys.stderr)
        return 2
    retain_freed_memory()  # as trials run
    batch = args.batch or base.data.batch_size
    load_before = os.getloadavg()[0]
    records = []
    for length in lengths:
        record = time_length(base, model, kwargs, method, references, length, batch, args.repeats,
                             args.profile_rows, args.flip_path)
        record["load_before"], record["load_after"] = load_before, os.getloadavg()[0]
        record["flush_denormal"] = flushed
        records.append(record)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            refs = ", ".join(f"{r['name']} {r['ms_median']:.1f} ms" for r in record["references"])
            print(f"  L={length}: {model} {record['model_ms_median']:.1f} ms; {refs}", file=sys.stderr, flush=True)
    if flushed:
        torch.set_flush_denormal(False)  # the process's setting, as it was
    if args.json:
        return 0
    first = records[0]
    print(f"training step of {model} {kwargs or ''} ({method or 'no discretization'}, {first['params']:,} parameters) "
          f"against parameter-matched references; batch {batch}, {first['threads']} threads, torch CPU path "
          f"{torch.backends.cpu.get_cpu_capability()}, subnormals {'flushed' if flushed else 'kept (as in trials)'}, "
          f"{args.repeats} interleaved steps; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; allocator: {allocator_setting()}")
    flip = " flip ms  fast speedup" if args.flip_path else ""
    print(f"{'L':>5} {'model ms':>9} {'reference':<14} {'width':>15} {'params':>8} {'ref ms':>8} {'ratio':>6}{flip}")
    for r in records:
        flip = f" {r['model_flip_ms_median']:8.2f} {r['fast_speedup']:13.2f}" if args.flip_path else ""
        for ref in r["references"] or [{"name": "-", "width": {}, "params": 0, "ms_median": math.nan,
                                         "ratio": math.nan}]:
            width = ",".join(f"{k}={v}" for k, v in ref["width"].items())
            print(f"{r['length']:>5} {r['model_ms_median']:9.2f} {ref['name']:<14} {width:>15} {ref['params']:>8,} "
                  f"{ref['ms_median']:8.2f} {ref['ratio']:6.2f}{flip}")
    for r in records:
        print_profile(f"{model} step profile, L={r['length']} (one step, by self CPU time)", r["profile"])
    return 0
