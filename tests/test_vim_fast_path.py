"""Vim's CPU fast path (channel-major products, no transposing copies, the backward direction's conv and
scan run in reverse inside the kernels) equals the flip path, values and gradients, for every
method × variant of the registry and every `bidirectional` choice, in both directions.

Tolerance: the two paths compute the same sums in different orders (fused conv vs PyTorch's
conv1d, reversed kernel loops vs flipped tensors), so they agree to fp32 rounding; 1e-5 relative
to the largest gradient of each parameter's module.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import discbench.models  # noqa: F401  (registers the Vim models in timm)
from discbench.methods import METHODS
from discbench.models.stack import BIDIRECTIONAL_CHOICES
from discbench.scan import BACKENDS

pytestmark = pytest.mark.skipif(BACKENDS["cpu"].unavailable_reason() is not None,
                                reason=f"the CPU kernel is not available: {BACKENDS['cpu'].unavailable_reason()}")


def _run(model, x, target, fast):
    for block in model.layers:
        block.mixer.fast_path = fast
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, target).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("bidirectional", BIDIRECTIONAL_CHOICES)
@pytest.mark.parametrize("key", sorted(METHODS))
def test_fast_path_equals_flip_path(key, bidirectional):
    """Both paths, values and every parameter's gradient (the λ projections' too for a method with λ)."""
    method = METHODS[key]
    torch.manual_seed(0)
    model = timm.create_model("vim_micro", num_classes=5, img_size=16, patch_size=4, scan_backend="cpu",
                              method=method.name, variant=method.variant, bidirectional=bidirectional)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([4, 1])
    flip_logits, flip_grads = _run(model, x, target, fast=False)
    fast_logits, fast_grads = _run(model, x, target, fast=True)
    torch.testing.assert_close(fast_logits, flip_logits, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # without autograd the fast path pads in_proj's rows (17 tokens here)
        for block in model.layers:
            block.mixer.fast_path = True
        torch.testing.assert_close(model(x), flip_logits, rtol=1e-5, atol=1e-6)
    assert set(fast_grads) == set(flip_grads)
    for name, want in flip_grads.items():
        # Relative to the largest gradient of the parameter's module: a bias's gradient can be a
        # sum that cancels to far below its terms (a λ projection's bias: 400× below its weight's).
        module = name.rsplit(".", 1)[0]
        scale = max(float(g.abs().max()) for n, g in flip_grads.items() if n.rsplit(".", 1)[0] == module)
        err = float((fast_grads[name] - want).abs().max()) / max(scale, 1e-30)
        assert err < 1e-5, (name, err)


@pytest.mark.parametrize("key", ["zoh/canonical", "trapezoid/paper"])
def test_fast_path_equals_flip_path_with_a_scaled_step(key):
    """With delta_scale ≠ 1 the fast path forms Δ outside the kernel (dt_proj is inside it only at 1)."""
    method = METHODS[key]
    torch.manual_seed(0)
    model = timm.create_model("vim_micro", num_classes=5, img_size=16, patch_size=4, scan_backend="cpu",
                              method=method.name, variant=method.variant)
    model.set_delta_scale(0.5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([4, 1])
    flip_logits, flip_grads = _run(model, x, target, fast=False)
    fast_logits, fast_grads = _run(model, x, target, fast=True)
    torch.testing.assert_close(fast_logits, flip_logits, rtol=1e-5, atol=1e-6)
    for name, want in flip_grads.items():
        torch.testing.assert_close(fast_grads[name], want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-12)


def test_fast_path_is_taken_only_on_the_cpu_kernel():
    model = timm.create_model("vim_micro", num_classes=5, img_size=16, patch_size=4, scan_backend="cpu")
    mixer, hidden = model.layers[0].mixer, torch.zeros(1, 3, 48)
    assert mixer._on_fast_path(hidden)
    model.set_scan_backend("torch")
    assert not mixer._on_fast_path(hidden)
    model.set_scan_backend("cpu")
    mixer.fast_path = False
    assert not mixer._on_fast_path(hidden)
