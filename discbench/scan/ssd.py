"""`ssd_scan`: Mamba-2's structured state-space duality (SSD) with every discretization.

Mamba-2 gives each head h one scalar pole a_h = A[h] < 0, one step Δ[b, k, h] per token, and a
state H_k of (headdim p × d_state n) per head. The drive of token k is the outer product
v_k = x_k ⊗ B_k (x_k: the head's p inputs, B_k: its group's n inputs). With z_k = a_h Δ_k every
method of docs/METHODS.md is, per head,

    H_k = Ā(z_k) · H_{k-1}  +  Δ_k · Σ_{j ∈ S} w_j(z_k, a_h, Δ_k) · x_{k+j} ⊗ B_{k+j},   H_{-1} = 0
    y_k = H_k · C_k  +  D ⊙ x_k,   then  y_k · silu(gate_k)  if a gate is given

(x and B outside [0, L) are zero). This is METHODS.md's recurrence for each of the head's p
channels, all with the head's pole on every state: `zoh/paper` is Mamba-2's own step, and
`mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus)` computes
the same (it applies D ⊙ x before the silu gate, D of shape (h,) or (h, p)).

Backends (SSD_BACKENDS): `reference`, a loop over tokens that reads as the recurrence above,
and `chunked` (scan/ssd_chunked.py), the chunked matrix-product form. Both evaluate the
registry's Ā(z) and taps, so a method added to discbench.methods is served here unchanged. A
backend is fn(x, dt, A, B, C, chunk_size, method, lam) with validated tensors in the compute
dtype (dt biased and activated) and returns (y before D and the gate (b, l, h, p), the final
state (b, h, p, n)); ssd_scan applies D and the gate.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from ..methods import Method, all_methods, method_of_call
from ..phi import shared_phi
from . import FINITE_DELTA_CHECK_DEVICES, Backend, NonFiniteInputError
from .reference import shift_tokens

Tensor = torch.Tensor

SSD_BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in [
        Backend("reference", "discbench.scan.ssd:ssd_reference",
                ("cpu", "cuda"), (torch.float32, torch.float64, torch.bfloat16, torch.float16),
                "PyTorch loop over tokens, one (p × n) state per head; autograd gives the gradients"),
        Backend("chunked", "discbench.scan.ssd_chunked:ssd_chunked",
                ("cpu", "cuda"), (torch.float32, torch.float64, torch.bfloat16, torch.float16),
                "SSD's chunked matrix products with the stencil folded in; autograd gives the gradients"),
    ]
}
AUTO_BACKEND = "chunked"


def tap_coefficients(method: Method, dt: Tensor, A: Tensor, lam: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ā(z) (b, l, h) and the drive coefficients Δ_k w_j(z_k, a, Δ_k[, λ_k]) (b, l, h, |S|).

    dt: (b, l, h), already biased and activated; A: (h,); lam: (b, l, h) or None. The last
    dimension of the coefficients follows `method.taps` (offsets `method.offsets`).
    """
    z = dt * A
    with shared_phi():
        weights = [tap.weight(z, A, dt, lam) for tap in method.taps]
    coefficients = torch.stack([w * torch.ones_like(z) for w in weights], dim=-1) * dt.unsqueeze(-1)
    return method.transition(z), coefficients


def heads_of_groups(t: Tensor, heads: int) -> Tensor:
    """(b, l, g, n) -> (b, l, h, n): group i serves the h/g consecutive heads i·h/g … (i+1)·h/g − 1."""
    return t.repeat_interleave(heads // t.shape[2], dim=2)


def finish(y: Tensor, x: Tensor, D: Tensor | None, gate: Tensor | None, out_dtype: torch.dtype) -> Tensor:
    """y + D ⊙ x, then the silu gate, as mamba_chunk_scan_combined; y, x, gate: (b, l, h, p); D: (h,) or (h, p)."""
    if D is not None:
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    if gate is not None:
        y = y * F.silu(gate)
    return y.to(out_dtype)


def ssd_reference(x, dt, A, B, C, chunk_size, method, lam):
    """Backend `reference`: the recurrence token by token (chunk_size does not change the result).

    x: (b, l, h, p); dt: (b, l, h) (biased, activated); A: (h,); B, C: (b, l, g, n); lam:
    (b, l, h) or None; all in the compute dtype. Returns y (b, l, h, p) before D and the gate,
    and the final state (b, h, p, n).
    """
    transition, coefficients = tap_coefficients(method, dt, A, lam)
    heads = x.shape[2]
    B_h, C_h = heads_of_groups(B, heads), heads_of_groups(C, heads)
    # Per tap j: the inputs x_{k+j} and B_{k+j} seen from token k.
    x_taps = [shift_tokens(x, j, dim=1) for j in method.offsets]
    B_taps = [shift_tokens(B_h, j, dim=1) for j in method.offsets]
    state = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[3])  # (b, h, p, n)
    ys = []
    for k in range(x.shape[1]):
        drive = sum(coefficients[:, k, :, i, None, None] * x_j[:, k, :, :, None] * B_j[:, k, :, None, :]
                    for i, (x_j, B_j) in enumerate(zip(x_taps, B_taps)))
        state = transition[:, k, :, None, None] * state + drive
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_h[:, k]))
    return torch.stack(ys, dim=1), state


def _check_tensor(name: str, t, shape: tuple[int, ...] | None, device: torch.device) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}; put all inputs on one device")


def validate(x, dt, A, B, C, chunk_size, D, z, dt_bias, lam, method: Method) -> None:
    """Check shapes, dtypes, devices, chunk_size, Δ's finiteness and whether λ fits the method."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a (b, l, h, p) tensor, got {shape}")
    batch, length, heads, headdim = x.shape
    if length == 0:
        raise ValueError("x has no tokens (l = 0); the scan needs l ≥ 1")
    device = x.device
    _check_tensor("x", x, None, device)
    _check_tensor("dt", dt, (batch, length, heads), device)
    _check_tensor("A", A, (heads,), device)
    _check_tensor("B", B, None, device)
    if B.dim() != 4 or B.shape[:2] != (batch, length):
        raise ValueError(f"B must be (b={batch}, l={length}, g, n), got {tuple(B.shape)}")
    groups = B.shape[2]
    if groups == 0 or heads % groups != 0:
        raise ValueError(f"B has {groups} groups, which must divide the {heads} heads of x")
    _check_tensor("C", C, tuple(B.shape), device)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if D is not None:
        _check_tensor("D", D, None, device)
        if tuple(D.shape) not in ((heads,), (heads, headdim)):
            raise ValueError(f"D must have shape ({heads},) or ({heads}, {headdim}), got {tuple(D.shape)}")
    for name, t, shape in (("z", z, tuple(x.shape)), ("dt_bias", dt_bias, (heads,)),
                           ("lam", lam, (batch, length, heads))):
        if t is not None:
            _check_tensor(name, t, shape, device)
    if method.takes_lam and lam is None:
        raise ValueError(f"method {method.key} needs lam, the per-token λ as a (b, l, h) tensor like dt")
    if not method.takes_lam and lam is not None:
        takers = ", ".join(m.key for m in all_methods() if m.takes_lam) or "no method of this registry"
        raise ValueError(f"lam is taken only by {takers}; method {method.key} does not use it (pass lam=None)")
    # As selective_scan: one reduction, the full isfinite pass only to confirm, and only where
    # reading the answer costs no device sync.
    if (dt.device.type in FINITE_DELTA_CHECK_DEVICES and not bool(torch.isfinite(dt.sum()))
            and not bool(torch.isfinite(dt).all())):
        raise NonFiniteInputError("dt has non-finite values (nan or inf); Δ must be finite")


def resolve_ssd_backend(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The SSD backend `name` ("auto": chunked), checked against the device and dtype."""
    if name == "auto":
        name = AUTO_BACKEND
    if name not in SSD_BACKENDS:
        raise ValueError(f"unknown ssd backend {name!r}; valid backends: auto, {', '.join(SSD_BACKENDS)}")
    backend = SSD_BACKENDS[name]
    if device.type not in backend.devices:
        raise ValueError(f"ssd backend {name!r} runs on {', '.join(backend.devices)} tensors, got {device.type}")
    if dtype not in backend.dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in backend.dtypes)
        raise ValueError(f"ssd backend {name!r} takes {allowed}, got {str(dtype).replace('torch.', '')}")
    return backend


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    return_final_states: bool = False,
    method: str = "zoh",
    variant: str = "canonical",
    lam: Tensor | None = None,
    backend: str = "auto",
):
    """Multi-head SSD scan with a chosen discretization, arguments as mamba_chunk_scan_combined.

    x: (b, l, h, p); dt: (b, l, h) (step before dt_bias and the optional softplus); A: (h,),
    negative, one pole per head; B, C: (b, l, g, n) with g | h (group i serves h/g consecutive
    heads); chunk_size: tokens per chunk of the `chunked` backend (any l, the last chunk may be
    shorter); D: (h,) or (h, p); z: (b, l, h, p), the gate (out = (y + D ⊙ x) · silu(z));
    dt_bias: (h,). `method`/`variant` as in selective_scan (zoh/paper is Mamba-2's step);
    lam: (b, l, h), the per-token λ of a method whose weights read one (required there,
    refused elsewhere). backend: auto (= chunked), chunked or reference.

    Returns out (b, l, h, p) in x's dtype, and with return_final_states also the final state
    (b, h, p, n), as mamba_chunk_scan_combined. Computes in fp64 for fp64 inputs, else fp32.
    """
    spec = method_of_call(method, variant)
    validate(x, dt, A, B, C, chunk_size, D, z, dt_bias, lam, spec)
    fn = resolve_ssd_backend(backend, x.device, x.dtype).load()
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_c = x.to(compute)
    dt_c = dt.to(compute)
    if dt_bias is not None:
        dt_c = dt_c + dt_bias.to(compute)
    if dt_softplus:
        dt_c = F.softplus(dt_c)
    y, final = fn(x_c, dt_c, A.to(compute), B.to(compute), C.to(compute), chunk_size, spec,
                  None if lam is None else lam.to(compute))
    out = finish(y, x_c, None if D is None else D.to(compute), None if z is None else z.to(compute), x.dtype)
    return (out, final.to(x.dtype)) if return_final_states else out


__all__ = ["ssd_scan", "SSD_BACKENDS", "resolve_ssd_backend", "tap_coefficients"]
