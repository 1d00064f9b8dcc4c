"""Backend "cpu": the fused C++ selective scan of csrc/, forward and backward.

The extension is compiled on first use with torch.utils.cpp_extension (ninja, BUILD_FLAGS)
from csrc/ (a checkout's top-level csrc/, or discbench/csrc/ in an installed wheel, see setup.py)
and cached under the torch extensions directory (TORCH_EXTENSIONS_DIR), keyed by a hash of
csrc/ (its files and its path), so an edited kernel is rebuilt and an unchanged one loads in
well under a second. The instruction set (avx512, avx2 or scalar) is chosen at run time from what the CPU supports;
DISCBENCH_CPU_ISA (or `use_isa`) forces one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch

from ..methods import Method

Tensor = torch.Tensor

SOURCES = ("scan_cpu.cpp", "kernel_avx512.cpp", "kernel_avx2.cpp", "kernel_scalar.cpp")


def _find_sources() -> Path:
    """The kernel's source folder: discbench/csrc in an installed wheel (package data), else the
    repository's csrc/ beside discbench/ (a checkout or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "csrc", package.parent / "csrc")
    for folder in candidates:
        if all((folder / s).is_file() for s in SOURCES):
            return folder
    return candidates[-1]  # extension() names what is missing there


CSRC = _find_sources()
COMPILE_SECONDS = 60  # the first build took 50 s on the 2-core development machine

# -ffp-contract=off: no product is fused into a sum unless the source says so (ds_fma), so the
# avx512, avx2 and scalar builds round every lane alike and give the same bits (tests/test_cpu_kernel.py).
BUILD_FLAGS = ("-O3", "-fopenmp", "-ffp-contract=off")

_extension = None
_load_error: str | None = None
_isa = os.environ.get("DISCBENCH_CPU_ISA", "auto")


def _source_hash() -> str:
    """Hash of the kernel sources, the build flags, the torch version and where the sources are."""
    digest = hashlib.sha256()
    # torch's ninja build names the source paths, so two checkouts sharing one build folder would
    # rebuild it on every switch between them, rewriting the .so under each other's running workers.
    digest.update(str(CSRC.resolve()).encode())
    for path in sorted(CSRC.glob("*")):
        if path.suffix in (".h", ".cpp"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    digest.update(" ".join(BUILD_FLAGS).encode())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:12]


def _compile_error_summary(exc: BaseException) -> str:
    """The compiler's first error lines, not the whole ninja log."""
    text = str(exc)
    errors = [line.strip() for line in text.splitlines() if "error:" in line]
    return "; ".join(errors[:3]) if errors else text.strip().splitlines()[-1] if text.strip() else repr(exc)


def _put_ninja_on_path() -> None:
    """torch's builder starts `ninja` by name; pip installs it among this interpreter's scripts,
    which are on PATH only in an activated venv (not under `make test` or a service)."""
    if shutil.which("ninja") is None:
        os.environ["PATH"] = sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", "")


def extension():
    """The compiled module, building it on first use; raises RuntimeError if it cannot."""
    global _extension, _load_error
    if _extension is not None:
        return _extension
    if _load_error is not None:
        raise RuntimeError(_load_error)
    missing = [s for s in SOURCES if not (CSRC / s).is_file()]
    if missing:
        _load_error = f"the kernel sources are missing: {', '.join(str(CSRC / s) for s in missing)}"
        raise RuntimeError(_load_error)
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    name = f"discbench_scan_cpu_{_source_hash()}"
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    cached = (build_dir / f"{name}.so").is_file()
    if not cached:
        print(f"discbench: compiling the CPU scan kernel (first use, ~{COMPILE_SECONDS} s) into {build_dir}…",
              file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        _extension = cpp_extension.load(
            name=name,
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=list(BUILD_FLAGS),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # compiler missing or failing: report it, the caller falls back
        _load_error = f"compiling {CSRC} failed: {_compile_error_summary(exc)}"
        raise RuntimeError(_load_error) from exc
    if not cached:
        print(f"discbench: CPU scan kernel ready ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    return _extension


# What falling back costs and how to avoid it; measured with `discbench bench scan --methods
# zoh,foh,rk4 --backends cpu,torch --threads 1` at Vim-Tiny's scan shape (8, 384, 197, 16), fp32,
# on a loaded 2-core machine: fwd+bwd 21–27 ms per call on this kernel, 1.6–6.7 s on `torch`.
FALLBACK_NOTE = ("without it backend='auto' runs the `torch` backend, measured 60–290× slower per "
                 "forward+backward at Vim-Tiny's scan shape (`discbench bench scan` times both here). "
                 "To fix: install a C++ compiler (g++) and ninja, and keep the kernel sources (a "
                 "checkout's csrc/, or discbench/csrc/ in an installed wheel); the kernel then "
                 "compiles on first use")


def unavailable_reason() -> str | None:
    """None when the kernel is built (building it if needed), else why it cannot be used, what
    falling back costs and how to fix it."""
    try:
        extension()
    except RuntimeError as exc:
        return f"{exc}; {FALLBACK_NOTE}"
    return None


def supported_isas() -> list[str]:
    """Instruction sets this CPU runs, widest first (e.g. ['avx512', 'avx2', 'scalar'])."""
    return list(extension().supported_isas())


def current_isa() -> str:
    """The instruction set the kernels are called with ('auto' unless forced)."""
    return _isa


@contextlib.contextmanager
def use_isa(name: str):
    """Force the kernels' instruction set ('auto', 'avx512', 'avx2', 'scalar') inside the block."""
    global _isa
    previous, _isa = _isa, name
    try:
        yield
    finally:
        _isa = previous


class SelectiveScanCPU(torch.autograd.Function):
    """Forward saves the inputs and the state checkpoints; backward recomputes the rest in C++.

    With delta_proj (d, r), delta is dt_proj's input (b, r, l) and the kernel forms Δ = delta_proj
    · delta itself; backward takes the kernel's gradient of Δ through that product here.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, delta_softplus, return_last_state,
                method_key, reverse, isa):
        ext = extension()
        for_backward = any(ctx.needs_input_grad[:10])
        out, last, ckpt, ypre = ext.forward(
            u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, delta_softplus, method_key, reverse,
            return_last_state, for_backward, isa,
        )
        if for_backward:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, ckpt,
                                  ypre if z is not None else None)
        ctx.config = (delta_softplus, method_key, reverse, isa)
        ctx.return_last_state = return_last_state
        return (out, last) if return_last_state else out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, ckpt, ypre = ctx.saved_tensors
        softplus, method_key, reverse, isa = ctx.config
        du, ddelta, *rest = extension().backward(
            u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, softplus, method_key, reverse, ckpt, ypre,
            dout.contiguous(), dlast, isa,
        )
        dproj = None
        if delta_proj is not None:  # ddelta is the fp32 gradient of Δ = delta_proj · delta
            if ctx.needs_input_grad[9]:
                dproj = torch.matmul(ddelta, delta.float().transpose(1, 2)).sum(0).to(delta_proj.dtype)
            ddelta = torch.matmul(delta_proj.float().t(), ddelta).to(delta.dtype) if ctx.needs_input_grad[1] else None
        return (du, ddelta, *rest, dproj, None, None, None, None, None)


def selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, method: Method,
                       lam=None, reverse: bool = False, delta_proj=None):
    """The `cpu` backend (signature of discbench.scan.BACKENDS); B, C as (b, g, n, l).

    lam (b, d, l): read in place when its tokens are contiguous, whatever its batch and channel
    strides (an expanded λ shared by the channels costs no copy); its gradient is (b, d, l).
    reverse and delta_proj: see selective_scan_block.
    """
    return SelectiveScanCPU.apply(
        u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, bool(delta_softplus), bool(return_last_state),
        method.key, bool(reverse), _isa,
    )


def selective_scan_block(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, method="zoh", variant="canonical", lam=None, delta_proj=None,
                         reverse=False):
    """A Mamba block's scan on the CPU kernel, with two things discbench.selective_scan does not do.

    Arguments and results as discbench.selective_scan, all in token order, plus:
    delta_proj (d, r): Mamba's dt_proj weight inside the kernel. delta is then dt_proj's input,
        (b, r, l), and Δ before delta_bias is delta_proj · delta per batch element (the same
        numbers up to fp32 rounding, without writing Δ to memory); gradients flow to both.
    reverse: the backward-direction scan of a bidirectional block: the recurrence runs from token
        l−1 down to 0 (a stencil's "previous" samples are the tokens to the right, as METHODS.md
        states for the backward scan). Equals flip(selective_scan(flip(inputs))) along l without
        copying anything into flipped order: the kernel reads and writes back to front.
    """
    from . import NonFiniteInputError, _check_lam, resolve_backend, validate
    from ..methods import method_of_call

    spec = method_of_call(method, variant)
    _check_lam(lam, spec)
    if delta_proj is None:
        B, C = validate(u, delta, A, B, C, D, z, delta_bias, lam)
    else:
        B, C = validate(u, None, A, B, C, D, z, delta_bias, lam)
        if not (isinstance(delta, torch.Tensor) and isinstance(delta_proj, torch.Tensor) and delta_proj.dim() == 2
                and delta_proj.shape[0] == u.shape[1]
                and tuple(delta.shape) == (u.shape[0], delta_proj.shape[1], u.shape[2])):
            shape = lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"with delta_proj (d, r), delta must be (b, r, l): got delta_proj "
                             f"{shape(delta_proj)}, delta {shape(delta)}, u {tuple(u.shape)}")
        if not bool(torch.isfinite(delta.sum())) and not bool(torch.isfinite(delta).all()):
            raise NonFiniteInputError("delta has non-finite values (nan or inf); Δ must be finite")
    resolve_backend("cpu", u.device, u.dtype)
    return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, spec,
                              lam, reverse=reverse, delta_proj=delta_proj)
