"""`discbench bench scan`: time the scan backends side by side, forward and forward+backward.

Rows: every requested method × variant on each requested backend, plus two yardsticks —
mamba_ssm's `selective_scan_ref` (backend "mamba_ref", Mamba's ZOH, when importable) and a bare
`torch.exp(out=)` over b·d·l·n fp32 elements (backend "torch.exp", the device's exponential
throughput). Inputs are shaped like one direction of one Vim block: D, the silu gate z,
delta_bias and softplus all on; A = −(1..n) per channel as Mamba initialises it; a method with a
per-token λ (trapezoid/paper) gets one λ per token shared by the channels, as a model passes it
(an expanded (b, d, l) view of a (b, 1, l) tensor, whose gradient is timed too).
Rows of backend "ssd_chunked"/"ssd_reference" time discbench.ssd_scan (Mamba-2's multi-head
SSD) on the same inputs read as heads of 64 channels (d = 384: 6 heads × 64), the first
channel's Δ, A (= −1) and delta_bias standing for its head's, B and C one group, chunks of 64.

On CUDA, when mamba_ssm's compiled kernel is there, `zoh/paper` through backend "mamba" is timed
as the anchor of every run, and each row states its time relative to it (`vs_mamba`).
Times are wall-clock milliseconds per call (median and minimum over repeats, after one warm-up
call; on CUDA the device is synchronised around each call); they are only comparable within one
run, on one machine, under one load.

The allocator matters on the CPU, above all for mamba_ssm's selective_scan_ref: it indexes one
token of two (b, d, l, n) tensors per step, so its backward materialises a zero (b, d, l, n)
gradient per token and tensor (39 MB each at the Vim-Tiny shape), and with glibc's defaults
every block over 32 MiB is a fresh mmap that page-faults in (measured: 3.8 million faults and
4.5 s per forward+backward). Raising glibc's mmap and trim thresholds, e.g.
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824,
removes the faults (1.1 s). The header and every JSON record state the allocator setting the
run had, so that ratios against the reference are read with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .allocator import allocator_setting
from .methods import METHOD_NAMES, METHODS, get_method
from .scan import BACKENDS
from .scan.ssd import SSD_BACKENDS

PASSES = ("fwd", "fwd+bwd")
DEVICES = ("cpu", "cuda")
SCAN_BACKENDS = ("cpu", "triton", "mamba", "torch", "reference")  # backends of discbench.selective_scan
SSD_SCAN_BACKENDS = ("ssd_chunked", "ssd_reference")  # "ssd_" + a backend of discbench.ssd_scan
SSD_HEADDIM = 64  # channels per head of the ssd rows (fewer when d is not a multiple: gcd(d, 64))
SSD_CHUNK_SIZE = 64
YARDSTICKS = ("mamba_ref", "torch.exp")
ALL_BACKENDS = SCAN_BACKENDS + SSD_SCAN_BACKENDS + YARDSTICKS
# Triton runs CPU tensors only through its (slow) interpreter, so it is no CPU default.
DEFAULT_BACKENDS = {
    "cpu": ("cpu", "torch", "reference", "ssd_chunked", "ssd_reference", "mamba_ref", "torch.exp"),
    "cuda": ("triton", "mamba", "torch", "reference", "ssd_chunked", "ssd_reference", "torch.exp"),
}
SLOW_BACKENDS = ("torch", "reference", "ssd_reference", "mamba_ref")  # timed with --ref-repeats
# Backends that compute one method only: mamba_ssm's kernel and reference know Mamba's ZOH.
ONLY_METHOD = {"mamba": ("zoh", "paper"), "mamba_ref": ("zoh", "paper")}
ANCHOR_BACKEND = "mamba"  # on CUDA, every row's time is also stated relative to this one's
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VIM_TINY = (8, 384, 197, 16)  # (batch, channels, tokens, state) of one Vim-Tiny scan at batch 8


@dataclass(frozen=True)
class ScanShape:
    batch: int
    dim: int
    length: int
    state: int

    @property
    def elements(self) -> int:
        """b·d·l·n, the size of the (never materialised) state tensor."""
        return self.batch * self.dim * self.length * self.state


def make_inputs(shape: ScanShape, dtype: torch.dtype = torch.float32, seed: int = 0,
                device: str = "cpu") -> dict[str, torch.Tensor]:
    """Vim-like scan inputs: u, delta, z (b, d, l); A (d, n) = −(1..n); B, C (b, n, l); D, delta_bias (d,);
    lam (b, 1, l), λ in (0, 1) per token (the scan gets it expanded over the channels).

    delta_bias is the inverse softplus of steps log-uniform in [0.001, 0.1] (Mamba's dt init).
    Drawn on the CPU and then moved, so a seed gives the same inputs on every device.
    """
    b, d, l, n = shape.batch, shape.dim, shape.length, shape.state
    gen = torch.Generator().manual_seed(seed)
    steps = torch.exp(torch.rand(d, generator=gen) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    inputs = {
        "u": torch.randn(b, d, l, generator=gen),
        "delta": 0.5 * torch.randn(b, d, l, generator=gen),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(b, n, l, generator=gen),
        "C": torch.randn(b, n, l, generator=gen),
        "D": torch.ones(d),
        "z": torch.randn(b, d, l, generator=gen),
        "delta_bias": steps + torch.log(-torch.expm1(-steps)),
        "lam": torch.sigmoid(torch.randn(b, 1, l, generator=gen)),
    }
    return {k: v.to(device=device, dtype=dtype) for k, v in inputs.items()}


def mamba_selective_scan_ref() -> Callable | None:
    """mamba_ssm's selective_scan_ref, or None when mamba_ssm is not importable here.

    The one place that imports it (the bench, the kernels trials and the tests use this).
    mamba_ssm imports its CUDA extension `selective_scan_cuda` at module level although the
    pure-PyTorch reference never uses it; on a CPU-only install an empty stand-in module lets
    that import pass. The stand-in is removed right after, so that nothing else (the "mamba"
    backend's check for the real extension) ever sees it.
    """
    stand_in = None
    try:
        try:
            import selective_scan_cuda  # noqa: F401
        except ImportError:
            import types

            stand_in = sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except Exception:  # mamba_ssm absent or broken: the row is skipped and the run says so
        return None
    finally:
        if stand_in is not None and sys.modules.get("selective_scan_cuda") is stand_in:
            del sys.modules["selective_scan_cuda"]
    return selective_scan_ref


def _scan_call(backend: str, method: str, variant: str) -> Callable:
    if backend == "mamba_ref":
        ref = mamba_selective_scan_ref()
        if ref is None:
            raise RuntimeError("mamba_ssm's selective_scan_ref is not importable")
        return lambda t: ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    if backend in SSD_SCAN_BACKENDS:
        return _ssd_call(backend.removeprefix("ssd_"), method, variant)
    from .scan import selective_scan

    takes_lam = get_method(method, variant).takes_lam
    return lambda t: selective_scan(
        t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"], delta_bias=t["delta_bias"],
        delta_softplus=True, method=method, variant=variant, backend=backend,
        lam=t["lam"].expand_as(t["u"]) if takes_lam else None,
    )


def _ssd_call(backend: str, method: str, variant: str) -> Callable:
    """ssd_scan on selective-scan inputs (see the module's docstring); returns out as (b, d, l)."""
    from .scan.ssd import ssd_scan

    takes_lam = get_method(method, variant).takes_lam

    def call(t: dict) -> torch.Tensor:
        b, d, l = t["u"].shape
        p = math.gcd(d, SSD_HEADDIM)
        h = d // p

        def heads(v: torch.Tensor) -> torch.Tensor:  # (b, d, l) -> (b, l, h, p)
            return v.transpose(1, 2).reshape(b, l, h, p)

        out = ssd_scan(heads(t["u"]), t["delta"][:, ::p].transpose(1, 2), t["A"][::p, 0],
                       t["B"].transpose(1, 2)[:, :, None], t["C"].transpose(1, 2)[:, :, None], SSD_CHUNK_SIZE,
                       D=t["D"].reshape(h, p), z=heads(t["z"]), dt_bias=t["delta_bias"][::p], dt_softplus=True,
                       method=method, variant=variant, backend=backend,
                       lam=t["lam"][:, 0, :, None].expand(b, l, h) if takes_lam else None)
        return out.reshape(b, l, d).transpose(1, 2)

    return call


def _time_rounds(runs: list[Callable[[], None]], repeats: int, device: str) -> list[list[float]]:
    """Milliseconds of `repeats` calls of each of `runs`, after one warm-up call of each.

    Calls go in rounds, one call of every run per round, so that a burst of load from elsewhere
    lands on all of them alike. CUDA kernels launch asynchronously: the device is synchronised
    before each call (nothing earlier is still running) and after it (its kernels are done).
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(run: Callable[[], None]) -> float:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return (time.perf_counter() - start) * 1e3

    for run in runs:
        timed(run)  # warm-up: builds/loads kernels, fills allocator caches
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, row_times in zip(runs, times):
            row_times.append(timed(run))
    return times


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_row(backend: str, pass_: str, repeats: int, dtype: str, device: str) -> None:
    if pass_ not in PASSES:
        raise ValueError(f"unknown pass {pass_!r}; valid passes: {', '.join(PASSES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    if backend not in ALL_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(ALL_BACKENDS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU "
                         "(torch.cuda.is_available() is False); use device 'cpu'")


def backend_problem(backend: str, device: str) -> str | None:
    """Why `backend` cannot be timed on `device` here, or None when it can."""
    if backend == "torch.exp":
        return None
    if backend == "mamba_ref":
        return None if mamba_selective_scan_ref() is not None else "mamba_ssm's selective_scan_ref is not importable"
    spec = SSD_BACKENDS[backend.removeprefix("ssd_")] if backend in SSD_SCAN_BACKENDS else BACKENDS[backend]
    if device not in spec.devices:
        return f"it runs on {' or '.join(spec.devices)} tensors only"
    if backend == "triton" and device == "cpu":
        # The backend's own check passes whenever a GPU is visible, but CPU tensors need the
        # interpreter even then.
        import triton

        if not triton.knobs.runtime.interpret:
            return "Triton runs CPU tensors only through its interpreter; set TRITON_INTERPRET=1 (slow)"
    return spec.unavailable_reason()


class _Inputs:
    """One set of inputs per pass, shared by the rows of a run (grads are reset per call)."""

    def __init__(self, shape: ScanShape, dtype: torch.dtype, seed: int, device: str = "cpu"):
        self.shape, self.dtype, self.seed, self.device = shape, dtype, seed, device
        self._cache: dict[str, object] = {}

    def get(self, pass_: str):
        if pass_ not in self._cache:
            inputs = make_inputs(self.shape, self.dtype, self.seed, self.device)
            if pass_ == "fwd":
                self._cache[pass_] = inputs
            else:
                leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
                grad_out = torch.randn(self.shape.batch, self.shape.dim, self.shape.length,
                                       generator=torch.Generator().manual_seed(self.seed + 1))
                grad_out = grad_out.to(device=self.device, dtype=self.dtype)
                self._cache[pass_] = (leaves, grad_out)
        return self._cache[pass_]


def _prepare(method: str, variant: str, backend: str, pass_: str, inputs: _Inputs) -> tuple[dict, Callable[[], None]]:
    """The row's identity and a callable running it once."""
    if backend == "torch.exp":
        x = -torch.rand(inputs.shape.elements, generator=torch.Generator().manual_seed(inputs.seed)).to(inputs.device)
        y = torch.empty_like(x)
        return {"method": "-", "variant": "-", "backend": backend, "pass": "fwd"}, lambda: torch.exp(x, out=y)
    spec = get_method(method, variant)
    row = {"method": spec.name, "variant": spec.variant, "backend": backend, "pass": pass_}
    call = _scan_call(backend, spec.name, spec.variant)
    if pass_ == "fwd":
        fwd_inputs = inputs.get("fwd")

        def run() -> None:
            with torch.no_grad():
                call(fwd_inputs)
    else:
        leaves, grad_out = inputs.get("fwd+bwd")

        def run() -> None:
            for leaf in leaves.values():
                leaf.grad = None
            call(leaves).backward(grad_out)
    return row, run


def _finish(row: dict, times: list[float], shape: ScanShape, dtype: str, device: str) -> dict:
    row.update({
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "repeats": len(times),
        "batch": shape.batch,
        "dim": shape.dim,
        "length": shape.length,
        "state": shape.state,
        "dtype": dtype,
        "device": device,
        "threads": torch.get_num_threads(),
    })
    return row


def time_scan(
    method: str,
    variant: str,
    backend: str,
    shape: ScanShape | tuple[int, int, int, int],
    pass_: str,
    repeats: int,
    dtype: str = "float32",
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Time one row: `backend` (one of ALL_BACKENDS) running `method`/`variant` on `shape`
    (batch, dim, length, state) on `device`, pass "fwd" (no autograd) or "fwd+bwd" (all inputs
    require grad, backward of a random output gradient).

    Returns {method, variant, backend, pass, ms_median, ms_min, repeats, batch, dim, length,
    state, dtype, device, threads}. "torch.exp" ignores method, variant and pass: it times
    torch.exp(x, out=y) over b·d·l·n fp32 elements.
    """
    shape = shape if isinstance(shape, ScanShape) else ScanShape(*shape)
    _check_row(backend, pass_, repeats, dtype, device)
    row, run = _prepare(method, variant, backend, pass_, _Inputs(shape, DTYPES[dtype], seed, device))
    return _finish(row, _time_rounds([run], repeats, device)[0], shape, dtype, device)


def _parse_methods(spec: str) -> list[tuple[str, str]]:
    """'all', or comma-separated 'name' (both variants) or 'name/variant' entries."""
    if spec == "all":
        return [(m.name, m.variant) for m in METHODS.values()]
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        matches = [(m.name, m.variant) for m in METHODS.values() if item in (m.name, m.key)]
        if not matches:
            raise ValueError(f"unknown method {item!r}; valid methods: {', '.join(METHOD_NAMES)} (or name/variant)")
        chosen += matches
    return chosen


def _parse_list(spec: str, valid: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in items if s not in valid]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or spec!r}; valid: {', '.join(valid)}")
    return items


def configure_parser(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="bench_target", required=True, metavar="TARGET")
    scan = targets.add_parser("scan", help="time the selective scan backends, forward and forward+backward",
                              description=__doc__.splitlines()[0])
    b, d, l, n = VIM_TINY
    scan.add_argument("--batch", type=int, default=b, help=f"batch size (default {b})")
    scan.add_argument("--dim", type=int, default=d, help=f"channels d (default {d}, Vim-Tiny's inner width)")
    scan.add_argument("--length", type=int, default=l, help=f"tokens l (default {l})")
    scan.add_argument("--state", type=int, default=n, help=f"state size n (default {n})")
    scan.add_argument("--methods", default="all",
                      help="'all' or comma-separated methods, each 'name' (both variants) or 'name/variant'")
    scan.add_argument("--device", choices=DEVICES, default=None,
                      help="where the inputs live (default: cuda when torch sees a GPU, else cpu)")
    scan.add_argument("--backends", default=None,
                      help=f"comma-separated, from {', '.join(ALL_BACKENDS)} (default on cpu: "
                           f"{','.join(DEFAULT_BACKENDS['cpu'])}; on cuda: {','.join(DEFAULT_BACKENDS['cuda'])}; "
                           f"a default backend that cannot run here is skipped, a requested one is an error)")
    scan.add_argument("--passes", default=",".join(PASSES), help="fwd, fwd+bwd or both (default both)")
    scan.add_argument("--repeats", type=int, default=10,
                      help="timed calls per row of the fast backends cpu, triton, mamba, torch.exp (default 10)")
    scan.add_argument("--ref-repeats", type=int, default=1,
                      help="timed calls per row of the slow backends torch, reference, ssd_reference, mamba_ref "
                           "(default 1)")
    scan.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="input dtype (default float32)")
    scan.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    scan.add_argument("--json", action="store_true", help="print one JSON record per row instead of a table")
    from .bench_model import configure_parser as configure_model

    configure_model(targets.add_parser("model", help="time Vim against DeiT of the same size, inference and a "
                                                     "training step, side by side in one process",
                                       description="Vim against DeiT of the same size, side by side in one process"))
    from .bench_train import configure_parser as configure_train

    configure_train(targets.add_parser("train", help="time a sequence model's training step against "
                                                     "parameter-matched non-SSM references (the GRU)",
                                       description="a sequence model's training step against parameter-matched "
                                                   "references, side by side in one process"))


def _usable_backends(requested: str | None, device: str) -> list[str]:
    """The backends to time on `device`: the requested ones (an error when one cannot run here)
    or the device's defaults (skipped with a note when one cannot), plus on CUDA the anchor."""
    backends = list(DEFAULT_BACKENDS[device]) if requested is None else _parse_list(requested, ALL_BACKENDS, "backend")
    usable = []
    for backend in backends:
        why = backend_problem(backend, device)
        if why is None:
            usable.append(backend)
        elif requested is not None:
            raise ValueError(f"backend {backend!r} cannot run on {device} here: {why}")
        else:
            print(f"discbench bench: backend {backend!r} skipped on {device}: {why}", file=sys.stderr)
    if device == "cuda" and ANCHOR_BACKEND not in usable:
        why = backend_problem(ANCHOR_BACKEND, device)
        if why is None:
            usable.append(ANCHOR_BACKEND)
        else:
            print(f"discbench bench: no mamba_ssm anchor (vs_mamba stays empty): {why}", file=sys.stderr)
    return usable


def _rows(args: argparse.Namespace) -> list[dict]:
    """All rows. Fast rows are timed together in rounds (see _time_rounds); the slow backends
    (seconds per call at Vim shapes on a CPU) row by row with --ref-repeats."""
    device = args.device
    shape = ScanShape(args.batch, args.dim, args.length, args.state)
    methods = _parse_methods(args.methods)
    passes = _parse_list(args.passes, PASSES, "pass")
    for repeats in (args.repeats, args.ref_repeats):
        _check_row("torch.exp", passes[0], repeats, args.dtype, device)
    backends = _usable_backends(args.backends, device)

    planned: list[tuple[str, str, str, str]] = []
    for backend in backends:
        if backend == "torch.exp":
            planned.append(("-", "-", backend, "fwd"))
        else:
            chosen = [ONLY_METHOD[backend]] if backend in ONLY_METHOD else methods
            planned += [(m, v, backend, p) for m, v in chosen for p in passes]
    inputs = _Inputs(shape, DTYPES[args.dtype], seed=0, device=device)
    prepared = [_prepare(m, v, b, p, inputs) for m, v, b, p in planned]

    def finish(i: int, times: list[float]) -> None:
        rows[i] = _finish(prepared[i][0], times, shape, args.dtype, device)
        if not args.json:
            r = rows[i]
            print(f"  {r['backend']:>10} {r['method']:>10}/{r['variant']:<9} {r['pass']:<7} "
                  f"{r['ms_median']:10.3f} ms", file=sys.stderr, flush=True)

    rows: list[dict] = [{} for _ in planned]
    fast = [i for i, (_, _, b, _) in enumerate(planned) if b not in SLOW_BACKENDS]
    slow = [i for i, (_, _, b, _) in enumerate(planned) if b in SLOW_BACKENDS]
    for i, times in zip(fast, _time_rounds([prepared[i][1] for i in fast], args.repeats, device)):
        finish(i, times)
    for i in slow:
        finish(i, _time_rounds([prepared[i][1]], args.ref_repeats, device)[0])
    return rows


def _add_speedups(rows: list[dict]) -> None:
    """speedup_vs_ref = (mamba_ssm's selective_scan_ref time, same pass) / (row time), using our
    reference backend of the same method when mamba_ssm is not there; ref names which."""
    mamba = {r["pass"]: r["ms_median"] for r in rows if r["backend"] == "mamba_ref"}
    ours = {(r["method"], r["variant"], r["pass"]): r["ms_median"] for r in rows if r["backend"] == "reference"}
    for r in rows:
        if r["backend"] == "torch.exp":
            r["speedup_vs_ref"], r["ref"] = None, None
        elif r["pass"] in mamba:
            r["speedup_vs_ref"], r["ref"] = mamba[r["pass"]] / r["ms_median"], "mamba_ref"
        elif (r["method"], r["variant"], r["pass"]) in ours:
            r["speedup_vs_ref"] = ours[(r["method"], r["variant"], r["pass"])] / r["ms_median"]
            r["ref"] = "reference"
        else:
            r["speedup_vs_ref"], r["ref"] = None, None


def add_vs_mamba(rows: list[dict]) -> None:
    """vs_mamba = (row time) / (mamba_ssm's CUDA kernel on zoh/paper, same pass): below 1 is
    faster than the anchor. None when the run has no anchor row for the pass (always on CPU)."""
    anchor = {r["pass"]: r["ms_median"] for r in rows if r["backend"] == ANCHOR_BACKEND}
    for r in rows:
        r["vs_mamba"] = r["ms_median"] / anchor[r["pass"]] if r["pass"] in anchor else None


def summary(rows: list[dict], backend: str = "cpu") -> list[str]:
    """The issue's target ratios for `backend`, each from this run's rows; and per pass, when the
    run has the mamba_ssm anchor, every method's time on `backend` relative to it."""
    lines = []
    mine = {(r["method"], r["variant"], r["pass"]): r["ms_median"] for r in rows if r["backend"] == backend}
    mamba = {r["pass"]: r["ms_median"] for r in rows if r["backend"] == "mamba_ref"}
    anchor = {r["pass"]: r["ms_median"] for r in rows if r["backend"] == ANCHOR_BACKEND}
    exp_ms = next((r["ms_median"] for r in rows if r["backend"] == "torch.exp"), None)
    fb = {(m, v): ms for (m, v, p), ms in mine.items() if p == "fwd+bwd"}
    if fb and "fwd+bwd" in mamba:
        (m, v), worst = max(fb.items(), key=lambda kv: kv[1])
        lines.append(f"fwd+bwd speedup vs mamba selective_scan_ref: min {mamba['fwd+bwd'] / worst:.0f}x "
                     f"({m}/{v}; target >= 200x)")
    if exp_ms is not None:
        for variant in ("canonical", "paper"):
            if ("zoh", variant, "fwd") in mine:
                lines.append(f"zoh/{variant} fwd / torch.exp over b*d*l*n: {mine[('zoh', variant, 'fwd')] / exp_ms:.2f} "
                             f"(target <= 1)")
    for variant in ("canonical", "paper"):
        if ("zoh", variant) in fb:
            zoh = fb[("zoh", variant)]
            same = {m: ms for (m, v), ms in fb.items() if v == variant}
            m, worst = max(same.items(), key=lambda kv: kv[1])
            lines.append(f"worst {variant} fwd+bwd / zoh/{variant} fwd+bwd: {worst / zoh:.2f} ({m}; target <= 1.5)")
    if fb and ("zoh", "paper") in fb:
        (m, v), worst = max(fb.items(), key=lambda kv: kv[1])
        lines.append(f"worst fwd+bwd of any method / zoh/paper (Mamba's) fwd+bwd: {worst / fb[('zoh', 'paper')]:.2f} ({m}/{v})")
    for pass_ in PASSES:
        ratios = [f"{m}/{v} {ms / anchor[pass_]:.2f}" for (m, v, p), ms in mine.items()
                  if p == pass_ and pass_ in anchor]
        if ratios:
            lines.append(f"{pass_} {backend} / mamba_ssm kernel zoh/paper ({anchor[pass_]:.3f} ms): {', '.join(ratios)}")
    return lines


def run_command(args: argparse.Namespace) -> int:
    if args.bench_target == "model":
        from .bench_model import run_model_command

        return run_model_command(args)
    if args.bench_target == "train":
        from .bench_train import run_train_command

        return run_train_command(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device is None:
        args.device = default_device()
    allocator = allocator_setting()
    try:
        rows = _rows(args)
    except ValueError as exc:
        print(f"discbench bench: {exc}", file=sys.stderr)
        return 2
    _add_speedups(rows)
    add_vs_mamba(rows)
    for r in rows:
        r["allocator"] = allocator
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print("no rows")
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = rows[0]
    print(f"selective scan on {args.device}, b={first['batch']} d={first['dim']} l={first['length']} "
          f"n={first['state']} {first['dtype']}, {first['threads']} threads, load average {load:.2f} at the end; "
          f"allocator: {allocator}")
    print(f"{'backend':>10} {'method':>10} {'variant':<9} {'pass':<7} {'ms_median':>10} {'ms_min':>10} "
          f"{'speedup_vs_ref':>15} {'vs_mamba':>8}")
    for r in rows:
        speed = "" if r["speedup_vs_ref"] is None else f"{r['speedup_vs_ref']:.1f}x ({r['ref']})"
        vs_mamba = "" if r["vs_mamba"] is None else f"{r['vs_mamba']:.2f}"
        print(f"{r['backend']:>10} {r['method']:>10} {r['variant']:<9} {r['pass']:<7} {r['ms_median']:10.3f} "
              f"{r['ms_min']:10.3f} {speed:>15} {vs_mamba:>8}")
    for line in summary(rows, backend="cpu" if args.device == "cpu" else "triton"):
        print(line)
    return 0
