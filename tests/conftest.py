"""Shared test helpers."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch


def _import_selective_scan_ref():
    """mamba_ssm's pure-PyTorch `selective_scan_ref`, importable without its CUDA extension.

    `mamba_ssm.ops.selective_scan_interface` imports the compiled `selective_scan_cuda` at module
    level although `selective_scan_ref` never uses it. When the extension is missing (no CUDA
    build), an empty stand-in module is registered just for that import and removed right
    after, so that code checking for the real extension (the "mamba" backend) still sees that it
    is absent.
    """
    if importlib.util.find_spec("mamba_ssm") is None:
        pytest.skip("mamba-ssm not installed")
    stand_in = None
    if "selective_scan_cuda" not in sys.modules and importlib.util.find_spec("selective_scan_cuda") is None:
        stand_in = types.ModuleType("selective_scan_cuda")
        sys.modules["selective_scan_cuda"] = stand_in
    try:
        interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    finally:
        if stand_in is not None and sys.modules.get("selective_scan_cuda") is stand_in:
            del sys.modules["selective_scan_cuda"]
    return interface.selective_scan_ref


@pytest.fixture(scope="session")
def selective_scan_ref():
    """mamba_ssm's reference selective scan (skips the test when mamba-ssm is not installed)."""
    return _import_selective_scan_ref()


@pytest.fixture
def one_torch_thread():
    """These models are tiny: a second thread gains nothing, and when the other core is busy
    (another test process, another job) OpenMP loops that wait for it run ~20× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance of this process, on loopback, for one test module.

    address="local": never attach to another Ray cluster running on this machine."""
    ray = pytest.importorskip("ray")
    from discbench.runner import _quiet_ray_environment

    _quiet_ray_environment()
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    yield ray
    if started:
        ray.shutdown()
