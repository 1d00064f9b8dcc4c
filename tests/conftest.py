"""Shared test helpers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from discbench.bench import mamba_selective_scan_ref


@pytest.fixture(scope="session", autouse=True)
def generated_data_cache(tmp_path_factory):
    """Generated datasets go to a folder of this test session (inherited by the Ray workers the
    tests start), not to the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISCBENCH_CACHE", str(tmp_path_factory.mktemp("discbench_cache")))
        yield


@pytest.fixture(scope="session")
def selective_scan_ref():
    """mamba_ssm's reference selective scan (skips the test when mamba-ssm is not installed);
    imported through discbench.bench's helper, which needs no CUDA extension."""
    if importlib.util.find_spec("mamba_ssm") is None:
        pytest.skip("mamba-ssm not installed")
    ref = mamba_selective_scan_ref()
    assert ref is not None, "mamba_ssm is installed but its selective_scan_ref does not import"
    return ref


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
