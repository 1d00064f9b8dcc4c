"""`discbench bench model`: Vim against DeiT of the same size, side by side in one process.

For each resolution × batch size, Vim (any registered size, any method × variant) and timm's DeiT
of the same width and depth (deit_{tiny,small,base}_patch16_224 for Vim-Ti/S/B; for vim_nano and
vim_micro a DeiT-Ti with their width and depth) are timed on random images:

  inference  forward under torch.inference_mode(), model in eval mode;
  train      one training step: forward, cross-entropy on random labels, backward and an AdamW
             step (zero_grad included), model in train mode.

The two models' calls alternate (one Vim call, one DeiT call per round, after one warm-up call of
each), so load from other processes falls on both alike; the ratio reported is DeiT's median
time / Vim's median time, i.e. Vim's throughput as a fraction of DeiT's (above 1: Vim faster).
The header states the load average before and after and the allocator setting (by default freed
memory is kept in the process, as trials run, see discbench.allocator; `--allocator glibc` keeps
glibc's defaults). `--flip-path` also times the same Vim on its flip path (the mixer without the
CPU fast path) in the same rounds. `--profile-rows N` adds torch.profiler's top N operators (by
self CPU time) of one Vim call per (task, resolution, batch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .allocator import allocator_setting, retain_freed_memory

TASKS = ("inference", "train")
AMP_CHOICES = ("off", "bf16")
ALLOCATOR_CHOICES = ("retain", "glibc")
# Vim name -> (timm DeiT name, overrides giving DeiT the Vim's width and depth).
DEIT_OF: dict[str, tuple[str, dict]] = {
    "vim_tiny_patch16_224": ("deit_tiny_patch16_224", {}),
    "vim_small_patch16_224": ("deit_small_patch16_224", {}),
    "vim_base_patch16_224": ("deit_base_patch16_224", {}),
    "vim_nano": ("deit_tiny_patch16_224", dict(embed_dim=96, depth=6, num_heads=3)),
    "vim_micro": ("deit_tiny_patch16_224", dict(embed_dim=48, depth=4, num_heads=3)),
}


@dataclass(frozen=True)
class Case:
    task: str
    resolution: int
    batch: int


def build_pair(vim: str, resolution: int, method: str, variant: str, num_classes: int = 1000,
               patch_size: int | None = None, extra: dict | None = None) -> tuple[nn.Module, nn.Module]:
    """(Vim, DeiT) for `resolution`-pixel images, same patch size (default: the Vim's), seeded the same."""
    import timm

    from . import models  # noqa: F401  (registers the Vim models in timm)

    if vim not in DEIT_OF:
        raise ValueError(f"unknown model {vim!r}; valid: {', '.join(DEIT_OF)}")
    torch.manual_seed(0)
    vim_model = timm.create_model(vim, img_size=resolution, num_classes=num_classes, method=method, variant=variant,
                                  **({"patch_size": patch_size} if patch_size else {}), **(extra or {}))
    deit_name, deit_kwargs = DEIT_OF[vim]
    torch.manual_seed(0)
    deit_model = timm.create_model(deit_name, img_size=resolution, patch_size=vim_model.patch_embed.patch_size,
                                   num_classes=num_classes, **deit_kwargs)
    return vim_model, deit_model


def make_run(model: nn.Module, case: Case, num_classes: int, amp: str) -> Callable[[], None]:
    """A callable doing one `case.task` call of `model` on fixed random images."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(case.batch, 3, case.resolution, case.resolution, generator=gen)
    labels = torch.randint(0, num_classes, (case.batch,), generator=gen)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16")
    if case.task == "inference":
        model.eval()

        def run() -> None:
            with torch.inference_mode(), autocast:
                model(images)
        return run
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    return step


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def interleaved_times(runs: list[Callable[[], None]], repeats: int) -> list[list[float]]:
    """Milliseconds of `repeats` calls of each run, one call of each per round, after a warm-up each."""
    for run in runs:
        _timed(run)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, row in zip(runs, times):
            row.append(_timed(run))
    return times


def profile_rows(run: Callable[[], None], top: int) -> list[dict]:
    """torch.profiler's `top` operators of one call by self CPU time: name, calls, self and total ms."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "self_share": e.self_cpu_time_total / total, "total_ms": e.cpu_time_total / 1e3}
            for e in events[:top]]


def flip_path_run(model: nn.Module, run: Callable[[], None]) -> Callable[[], None]:
    """`run` with every Vim mixer of `model` on its flip path (fast_path False) for the call."""
    def flipped() -> None:
        mixers = [block.mixer for block in model.layers]
        for mixer in mixers:
            mixer.fast_path = False
        try:
            run()
        finally:
            for mixer in mixers:
                mixer.fast_path = True
    return flipped


def time_pair(vim: str, case: Case, method: str = "zoh", variant: str = "canonical", repeats: int = 5,
              num_classes: int = 1000, amp: str = "off", profile_top: int = 0,
              patch_size: int | None = None, flip_path: bool = False) -> dict:
    """One record: Vim and DeiT medians/minima (ms per call), images/s, DeiT time / Vim time,
    and optionally Vim's profile rows. flip_path: also time the same Vim on its flip path (no
    CPU fast path: flips, transposing copies, PyTorch's conv1d) in the same rounds, adding
    vim_flip_ms_median and fast_speedup (flip-path time / fast-path time)."""
    vim_model, deit_model = build_pair(vim, case.resolution, method, variant, num_classes, patch_size)
    runs = [make_run(vim_model, case, num_classes, amp), make_run(deit_model, case, num_classes, amp)]
    if flip_path:
        runs.append(flip_path_run(vim_model, runs[0]))
    vim_ms, deit_ms, *flip_ms = interleaved_times(runs, repeats)
    record = {"model": vim, "deit": DEIT_OF[vim][0], "method": method, "variant": variant, "task": case.task,
              "resolution": case.resolution, "batch": case.batch, "amp": amp, "repeats": repeats,
              "threads": torch.get_num_threads(),
              "vim_ms_median": statistics.median(vim_ms), "vim_ms_min": min(vim_ms),
              "deit_ms_median": statistics.median(deit_ms), "deit_ms_min": min(deit_ms)}
    record["vim_img_s"] = case.batch * 1e3 / record["vim_ms_median"]
    record["deit_img_s"] = case.batch * 1e3 / record["deit_ms_median"]
    record["ratio"] = record["deit_ms_median"] / record["vim_ms_median"]
    if flip_path:
        record["vim_flip_ms_median"] = statistics.median(flip_ms[0])
        record["fast_speedup"] = record["vim_flip_ms_median"] / record["vim_ms_median"]
    record["profile"] = profile_rows(runs[0], profile_top) if profile_top > 0 else []
    return record


def positive_ints(spec: str, what: str) -> list[int]:
    """Comma-separated positive integers from a flag's value, else ValueError naming `what`."""
    try:
        values = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} must be comma-separated positive integers, got {spec!r}")
    return values


def configure_parser(model: argparse.ArgumentParser) -> None:
    model.add_argument("--model", default="vim_tiny_patch16_224", choices=tuple(DEIT_OF),
                       help="Vim size (default vim_tiny_patch16_224); DeiT of the same size is its partner")
    model.add_argument("--method", default="zoh/canonical", help="method or method/variant (default zoh/canonical)")
    model.add_argument("--resolutions", default="224", help="comma-separated image sizes in pixels (default 224)")
    model.add_argument("--batches", default="8", help="comma-separated batch sizes (default 8)")
    model.add_argument("--tasks", default=",".join(TASKS), help="inference, train or both (default both)")
    model.add_argument("--cases", default=None,
                       help="explicit task:resolution:batch triples, comma-separated (e.g. "
                            "inference:224:8,inference:1024:1,train:224:8); replaces the three above")
    model.add_argument("--patch-size", type=int, default=None, help="patch size (default: the Vim size's)")
    model.add_argument("--num-classes", type=int, default=1000, help="classifier width (default 1000)")
    model.add_argument("--repeats", type=int, default=5, help="timed calls per model and case (default 5)")
    model.add_argument("--amp", choices=AMP_CHOICES, default="off", help="bf16 autocast for both models (default off)")
    model.add_argument("--profile-rows", type=int, default=10,
                       help="torch.profiler's top operators of one Vim call per case (default 10; 0: none)")
    model.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    model.add_argument("--flip-path", action="store_true",
                       help="also time the same Vim on its flip path (no CPU fast path) in the same rounds")
    model.add_argument("--allocator", choices=ALLOCATOR_CHOICES, default="retain",
                       help="retain: keep freed memory in the process, as trials do (default); glibc: glibc's "
                            "defaults (see discbench.allocator)")
    model.add_argument("--json", action="store_true", help="one JSON record per case instead of a table")


def parse_cases(args: argparse.Namespace) -> list[Case]:
    if args.cases:
        cases = []
        for item in args.cases.split(","):
            parts = item.split(":")
            if len(parts) != 3 or parts[0] not in TASKS:
                raise ValueError(f"--cases item {item!r} must be task:resolution:batch with task in {', '.join(TASKS)}")
            cases.append(Case(parts[0], *positive_ints(f"{parts[1]},{parts[2]}", "--cases resolution and batch")))
        return cases
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"--tasks must list some of {', '.join(TASKS)}, got {args.tasks!r}")
    return [Case(t, r, b) for t in tasks for r in positive_ints(args.resolutions, "--resolutions")
            for b in positive_ints(args.batches, "--batches")]


def run_model_command(args: argparse.Namespace) -> int:
    from .methods import get_method

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        spec = get_method(args.method, None if "/" in args.method else "canonical")
        cases = parse_cases(args)
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    except ValueError as exc:
        print(f"discbench bench model: {exc}", file=sys.stderr)
        return 2
    if args.allocator == "retain":
        retain_freed_memory()
    allocator = allocator_setting()
    load_before = os.getloadavg()[0]
    records = []
    for case in cases:
        record = time_pair(args.model, case, spec.name, spec.variant, args.repeats, args.num_classes, args.amp,
                           args.profile_rows, args.patch_size, args.flip_path)
        record["load_before"], record["load_after"] = load_before, os.getloadavg()[0]
        record["allocator"] = allocator
        records.append(record)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(f"  {case.task} {case.resolution}px batch {case.batch}: Vim {record['vim_ms_median']:.1f} ms, "
                  f"DeiT {record['deit_ms_median']:.1f} ms", file=sys.stderr, flush=True)
    if args.json:
        return 0
    print(f"{args.model} ({spec.key}) vs {DEIT_OF[args.model][0]}, {torch.get_num_threads()} threads, amp {args.amp}, "
          f"{args.repeats} interleaved repeats; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"allocator: {allocator}")
    flip = " flip ms  fast speedup" if args.flip_path else ""
    print(f"{'task':<10} {'px':>5} {'batch':>5} {'vim ms':>9} {'deit ms':>9} {'vim img/s':>10} {'deit img/s':>10} "
          f"{'ratio':>6}{flip}")
    for r in records:
        flip = f" {r['vim_flip_ms_median']:8.1f} {r['fast_speedup']:13.2f}" if args.flip_path else ""
        print(f"{r['task']:<10} {r['resolution']:>5} {r['batch']:>5} {r['vim_ms_median']:9.1f} {r['deit_ms_median']:9.1f} "
              f"{r['vim_img_s']:10.2f} {r['deit_img_s']:10.2f} {r['ratio']:6.2f}{flip}")
    for r in records:
        print_profile(f"Vim profile, {r['task']} {r['resolution']}px batch {r['batch']} (one call, by self CPU time)",
                      r["profile"])
    return 0


def print_profile(title: str, rows: list[dict]) -> None:
    """`profile_rows`' rows under a title (nothing when there are none)."""
    if not rows:
        return
    print(f"\n{title}:")
    for row in rows:
        print(f"  {row['op'][:44]:<44} {row['calls']:>6} calls {row['self_ms']:9.2f} ms self "
              f"{100 * row['self_share']:5.1f}%")
