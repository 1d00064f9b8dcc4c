"""A method added through the registry alone: the backends that compute from the registry run it,
the kernel backends refuse it with the method, the backend and what to add where; and the
compiled kernel's method list is the registry's."""

from __future__ import annotations

import math
import re

import pytest
import torch

from discbench import selective_scan, ssd_scan
from discbench.methods import METHODS, Method, Tap, all_methods, exponential, method_ids, register, unregister
from discbench.phi import phi
from discbench.scan import cpu, mamba


def _throwaway() -> Method:
    """foh's weights with the taps swapped: w_{-1} = φ_2, w_0 = φ_1 − φ_2 (no kernel has it)."""
    return Method("throwaway", "canonical", exponential,
                  (Tap(-1, lambda z, a, d, lam: phi(z, 2)), Tap(0, lambda z, a, d, lam: phi(z, 1) - phi(z, 2))),
                  order=1, stability_bound=-math.inf, summary="test only")


@pytest.fixture
def throwaway():
    method = _throwaway()
    register(method)
    yield method
    unregister(method.key)


def _inputs(dtype=torch.float64, b=2, d=3, l=9, n=4):
    gen = torch.Generator().manual_seed(7)
    return dict(u=torch.randn(b, d, l, generator=gen, dtype=dtype),
                delta=torch.rand(b, d, l, generator=gen, dtype=dtype) + 0.1,
                A=-torch.rand(d, n, generator=gen, dtype=dtype) * 2 - 0.1,
                B=torch.randn(b, n, l, generator=gen, dtype=dtype),
                C=torch.randn(b, n, l, generator=gen, dtype=dtype))


def _by_hand(u, delta, A, B, C):
    """The recurrence h_k = e^z h_{k-1} + Δ (φ_2(z) v_{k-1} + (φ_1(z) − φ_2(z)) v_k), y_k = C_k · h_k."""
    b, d, l = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=u.dtype)
    v_prev = torch.zeros_like(h)
    ys = []
    for k in range(l):
        z = delta[:, :, k, None] * A
        v = u[:, :, k, None] * B[:, None, :, k]
        h = torch.exp(z) * h + delta[:, :, k, None] * (phi(z, 2) * v_prev + (phi(z, 1) - phi(z, 2)) * v)
        ys.append((h * C[:, None, :, k]).sum(-1))
        v_prev = v
    return torch.stack(ys, dim=-1)


def test_reference_and_torch_backends_run_a_registered_method_from_its_registry_entry(throwaway):
    t = _inputs()
    want = _by_hand(**t)
    outs = {}
    for backend in ("reference", "torch"):
        leaves = {k: v.clone().requires_grad_() for k, v in t.items()}
        outs[backend] = selective_scan(**leaves, method="throwaway", backend=backend)
        outs[backend].square().sum().backward()
        outs[backend] = (outs[backend].detach(), [leaves[k].grad for k in t])
        torch.testing.assert_close(outs[backend][0], want, rtol=1e-10, atol=1e-12)
    for mine, ref in zip(outs["torch"][1], outs["reference"][1]):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-11)


def test_ssd_backends_run_a_registered_method(throwaway):
    gen = torch.Generator().manual_seed(3)
    b, l, h, p, n = 1, 11, 2, 3, 4
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=gen, dtype=torch.float64) + 0.1
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.1
    B = torch.randn(b, l, 1, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, 1, n, generator=gen, dtype=torch.float64)
    ref = ssd_scan(x, dt, A, B, C, chunk_size=4, method="throwaway", backend="reference")
    chunked = ssd_scan(x, dt, A, B, C, chunk_size=4, method="throwaway", backend="chunked")
    torch.testing.assert_close(chunked, ref, rtol=1e-10, atol=1e-12)
    foh = ssd_scan(x, dt, A, B, C, chunk_size=4, method="foh", backend="reference")
    assert not torch.allclose(ref, foh)  # the swapped taps are what ran


def test_cpu_backend_refuses_a_method_without_kernel_code_and_says_what_to_add_where(throwaway):
    t = _inputs(torch.float32)
    with pytest.raises(ValueError) as refused:
        selective_scan(**t, method="throwaway", backend="cpu")
    message = str(refused.value)
    for part in ("backend 'cpu'", "throwaway/canonical", "struct ThrowawayCanonical", "ds_methods.h", "eval()"):
        assert part in message, (part, message)
    with pytest.raises(ValueError, match="backend 'cpu' has no code for method throwaway/canonical"):
        cpu.selective_scan_block(**t, method="throwaway")
    assert throwaway not in cpu.kernel_methods() and "throwaway" not in cpu.method_list_header()


def test_auto_falls_back_from_the_cpu_kernel_to_torch_for_a_method_it_lacks(throwaway):
    t = _inputs(torch.float32)
    with pytest.warns(RuntimeWarning, match="backend 'cpu' not used on cpu: backend 'cpu' has no code for method "
                                            "throwaway/canonical"):
        got = selective_scan(**t, method="throwaway", backend="auto")
    torch.testing.assert_close(got, selective_scan(**t, method="throwaway", backend="torch"))


def test_triton_backend_refuses_a_method_without_kernel_code_and_says_what_to_add_where(throwaway, monkeypatch):
    pytest.importorskip("triton")
    from discbench.scan import triton as triton_backend

    message = triton_backend.missing_method_reason(throwaway)
    for part in ("backend 'triton'", "throwaway/canonical", "throwaway_canonical(z, a, delta, lam, TAP",
                 "triton_methods.py"):
        assert part in message, (part, message)
    assert "transition_" not in message  # the registry's exponential transition is there already
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the backend is then available on the CPU
    with pytest.raises(ValueError, match=re.escape(message)):
        selective_scan(**_inputs(torch.float32), method="throwaway", backend="triton")


def test_triton_names_a_missing_transition_too():
    pytest.importorskip("triton")
    from discbench.scan import triton_methods as tm

    method = Method("cubic", "canonical", lambda z: 1 + z, _throwaway().taps, order=1, stability_bound=-2.0,
                    summary="test only")
    message = tm.missing_method_reason(method)
    assert "cubic_canonical(z, a, delta, lam, TAP" in message and "transition_<lambda>(z)" in message
    assert "give the method one of the transitions already there" in message
    with pytest.raises(ValueError, match="backend 'triton' has no code for method cubic/canonical"):
        tm.kernel_math(method)


def test_mamba_backend_refuses_every_method_but_its_own(throwaway):
    message = mamba.missing_method_reason(throwaway)
    assert "backend 'mamba'" in message and "throwaway/canonical" in message and "zoh/paper" in message
    assert mamba.missing_method_reason(METHODS["zoh/paper"]) is None
    with pytest.raises(ValueError, match=re.escape(message)):
        mamba.selective_scan_mamba(*_inputs(torch.float32).values(), None, None, None, False, False, throwaway)


def test_the_kernel_method_list_is_generated_from_the_registry():
    """Every registry method has C++ math, and the list the build receives carries the registry's
    ids, keys, λ flags and stencil spans, in registry order."""
    assert cpu.kernel_methods() == all_methods()
    ids = method_ids()
    rows = re.findall(r'X\((\d+), "([^"]+)", (true|false), (\w+), (-?\d+), (-?\d+), (true|false), (true|false)\)',
                      cpu.method_list_header())
    assert [key for _, key, *_ in rows] == list(METHODS)
    for id_, key, takes_lam, struct, lo, hi, of_z, explicit in rows:
        method = METHODS[key]
        assert int(id_) == ids[key] and struct == cpu.struct_name(method)
        assert (int(lo), int(hi)) == (min(method.offsets), max(method.offsets))
        assert (takes_lam, of_z, explicit) == tuple(
            "true" if flag else "false"
            for flag in (method.takes_lam, "z" in method.weights_read, bool(method.weights_read & {"a", "delta"})))


def test_the_built_kernel_runs_exactly_the_generated_list():
    if cpu.unavailable_reason() is not None:
        pytest.skip(cpu.unavailable_reason())
    assert list(cpu.extension().method_keys()) == [m.key for m in cpu.kernel_methods()]
