"""`selective_scan`: one entry point, inputs validated once, then handed to a backend.

Backends are registered by name (see BACKENDS). Each is a callable

    fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, method, lam)

that receives validated tensors with B and C always grouped as (b, g, n, l), `method` a
discbench.methods.Method (one the backend has code for: a backend module may define
`missing_method_reason(method)`, None or what to add where, which `resolve_backend` consults) and `lam` the per-token λ (b, d, l) of a method that takes one
(`method.takes_lam`), else None; and returns `out` (b, d, l) in u's dtype, or `(out, last_state)` with
last_state (b, d, n).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..methods import METHODS, Method, all_methods, method_of_call

Tensor = torch.Tensor


class NonFiniteInputError(ValueError):
    """Δ holds nan or inf: in a training run this means the model has diverged."""


# Where `validate` checks Δ for nan/inf. Reading the answer on the host costs a device sync on
# a GPU (mamba_ssm pays none), so only CPU tensors are checked; elsewhere a non-finite Δ makes
# the scan's output, hence the loss, non-finite, which a training run reports as divergence.
FINITE_DELTA_CHECK_DEVICES = ("cpu",)


@dataclass(frozen=True)
class Backend:
    """A scan implementation: `module:function` loaded on first use, and where it runs."""

    name: str
    target: str  # "discbench.scan.reference:selective_scan_reference"
    devices: tuple[str, ...]  # device types it accepts
    dtypes: tuple[torch.dtype, ...]
    summary: str

    def load(self) -> Callable:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else why not."""
        module = self.target.partition(":")[0]
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # an optional compiled dependency is missing
            return f"{module} failed to import: {exc}"
        check = getattr(mod, "unavailable_reason", None)
        return check() if check else None

    def missing_method_reason(self, method: Method) -> str | None:
        """None when this backend computes `method`, else why not and what to add where. Backends
        that compute from the registry's functions (reference, torch) run every method."""
        mod = importlib.import_module(self.target.partition(":")[0])
        check = getattr(mod, "missing_method_reason", None)
        return check(method) if check else None


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in [
        Backend("reference", "discbench.scan.reference:selective_scan_reference",
                ("cpu", "cuda"), (torch.float32, torch.float64, torch.bfloat16, torch.float16),
                "plain PyTorch loop over tokens; autograd gives the gradients"),
        Backend("torch", "discbench.scan.parallel:selective_scan_parallel",
                ("cpu", "cuda"), (torch.float32, torch.float64, torch.bfloat16, torch.float16),
                "PyTorch associative scan by doubling, no loop over tokens"),
        Backend("cpu", "discbench.scan.cpu:selective_scan_cpu",
                ("cpu",), (torch.float32, torch.bfloat16),
                "fused C++ kernel, forward and backward (csrc/)"),
        Backend("triton", "discbench.scan.triton:selective_scan_triton",
                ("cuda", "cpu"), (torch.float32, torch.bfloat16, torch.float16),
                "Triton kernel; on CPU tensors only under TRITON_INTERPRET=1"),
        Backend("mamba", "discbench.scan.mamba:selective_scan_mamba",
                ("cuda",), (torch.float32, torch.bfloat16, torch.float16),
                "mamba_ssm's CUDA kernel, zoh/paper only"),
    ]
}

# The preference order of backend="auto" per device type; a method listed in AUTO_SPECIAL
# tries its own backends first (mamba_ssm's CUDA kernel knows only Mamba's ZOH).
AUTO_ORDER = {"cpu": ("cpu", "torch"), "cuda": ("triton", "torch")}
AUTO_SPECIAL = {("cuda", "zoh/paper"): ("mamba",)}
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype, method_key: str = "") -> Backend:
    """The backend to run on `device` (and the method of `method_key`, when given): `name`, or for
    "auto" the first that works here."""
    method = METHODS.get(method_key)
    if name == "auto":
        order = AUTO_SPECIAL.get((device.type, method_key), ()) + AUTO_ORDER.get(device.type, ("torch",))
        for candidate in order:
            backend = BACKENDS[candidate]
            why = backend.unavailable_reason()
            if why is None and dtype not in backend.dtypes:
                why = f"it does not take {dtype}"
            if why is None and method is not None:
                why = backend.missing_method_reason(method)
            if why is None:
                return backend
            _warn_once(f"discbench: backend {candidate!r} not used on {device.type}: {why}; "
                       f"falling back to the next of {order}")
        return BACKENDS["torch"]
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: auto, {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    if device.type not in backend.devices:
        raise ValueError(f"backend {name!r} runs on {', '.join(backend.devices)} tensors, got {device.type}")
    if dtype not in backend.dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in backend.dtypes)
        raise ValueError(f"backend {name!r} takes {allowed}, got {str(dtype).replace('torch.', '')}")
    why = backend.unavailable_reason()
    if why is not None:
        raise RuntimeError(f"backend {name!r} is not available: {why}")
    why = None if method is None else backend.missing_method_reason(method)
    if why is not None:
        raise ValueError(why)
    return backend


def _check_shape(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


def _grouped(name: str, t: Tensor, batch: int, channels: int, state: int, length: int) -> Tensor:
    """B or C as (b, g, n, l); accepts (b, n, l) as one group."""
    given = tuple(t.shape)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError(f"{name} must be (b, n, l) or (b, g, n, l), got {tuple(t.shape)}")
    b, g, n, l = t.shape
    if (b, n, l) != (batch, state, length):
        raise ValueError(f"{name} must be (b={batch}, [g,] n={state}, l={length}), got {given}")
    if g == 0 or channels % g != 0:
        raise ValueError(f"{name} has {g} groups, which must divide the {channels} channels of u")
    return t


def _check_lam(lam, method: Method) -> None:
    """`lam` given exactly when the method takes a per-token λ, else a clear error."""
    if method.takes_lam and lam is None:
        raise ValueError(f"method {method.key} needs lam, the per-token λ as a (b, d, l) tensor like delta "
                         "(e.g. the sigmoid of a learned projection)")
    if not method.takes_lam and lam is not None:
        takers = ", ".join(m.key for m in all_methods() if m.takes_lam)
        raise ValueError(f"lam is taken only by {takers}; method {method.key} does not use it (pass lam=None)")


def validate(u, delta, A, B, C, D, z, delta_bias, lam=None) -> tuple[Tensor, Tensor]:
    """Check shapes, dtypes, devices and finiteness; return B, C as (b, g, n, l).

    Δ is checked for nan/inf only on the devices of FINITE_DELTA_CHECK_DEVICES (no sync); delta
    None skips every check of Δ (a caller passing Δ in another form checks it itself).
    `lam`, when given, is checked like delta ((b, d, l), floating point, u's device); whether a
    method needs it is checked by `_check_lam`.
    """
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if t is None and name == "delta":
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l), got shape {tuple(u.shape)}")
    if not u.is_floating_point():
        raise TypeError(f"u must be a floating-point tensor, got {u.dtype}")
    batch, channels, length = u.shape
    if delta is not None:  # None: the caller checked a Δ it passes in another form
        _check_shape("delta", delta, (batch, channels, length))
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (d={channels}, n), got {tuple(A.shape)}")
    state = A.shape[1]
    B = _grouped("B", B, batch, channels, state, length)
    C = _grouped("C", C, batch, channels, state, length)
    optional = {"D": (D, (channels,)), "z": (z, (batch, channels, length)),
                "delta_bias": (delta_bias, (channels,)), "lam": (lam, (batch, channels, length))}
    for name, (t, shape) in optional.items():
        if t is not None:
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
            _check_shape(name, t, shape)
    tensors = {"u": u, "A": A, "B": B, "C": C, **({} if delta is None else {"delta": delta})}
    tensors.update({k: v for k, (v, _) in optional.items() if v is not None})
    for name, t in tensors.items():
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}; put all inputs on one device")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    # One reduction first: a nan or inf makes the sum non-finite, and a full isfinite pass
    # costs as much as a fast scan, so it runs only to confirm.
    if (delta is not None and delta.device.type in FINITE_DELTA_CHECK_DEVICES and delta.numel()
            and not bool(torch.isfinite(delta.sum())) and not bool(torch.isfinite(delta).all())):
        raise NonFiniteInputError("delta has non-finite values (nan or inf); Δ must be finite")
    return B, C


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    method: str = "zoh",
    variant: str = "canonical",
    backend: str = "auto",
    lam: Tensor | None = None,
):
    """Selective scan with a chosen discretization, arguments as mamba_ssm's selective_scan_ref.

    u, delta, z: (b, d, l); A: (d, n), negative; B, C: (b, n, l) or (b, g, n, l) with g | d;
    D, delta_bias: (d,). `method` is a name of the registry (discbench.METHOD_NAMES; optionally
    "name/variant", which then takes precedence over `variant`); `variant` is canonical or paper. `lam`: (b, d, l), the per-token λ_k in [0, 1] of trapezoid/paper
    (required there, refused for every other method; differentiable; may be an expanded view,
    e.g. one λ per token shared by the channels, `lam_bl[:, None, :].expand(b, d, l)`).
    Returns out (b, d, l) in u's dtype, and with return_last_state also the final state (b, d, n).
    """
    spec = method_of_call(method, variant)
    _check_lam(lam, spec)
    B, C = validate(u, delta, A, B, C, D, z, delta_bias, lam)
    chosen = resolve_backend(backend, u.device, u.dtype, spec.key)
    fn = chosen.load()
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, spec, lam)


__all__ = ["selective_scan", "BACKENDS", "Backend", "NonFiniteInputError", "resolve_backend", "validate"]
