"""An installed (non-editable) discbench carries the CPU kernel's sources and builds the kernel.

The wheel is built from a copy of the package's sources, installed with --no-deps into a fresh
venv outside the source tree, and run from a folder outside it. The venv's dependencies (torch
and the rest) come from this test's own environment through a .pth file: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from (as an sdist would carry it).
BUILD_INPUTS = ("discbench", "csrc", "pyproject.toml", "setup.py", "README.md")

# Runs inside the fresh venv: the cpu backend against the reference, and where things came from.
CHECK = """
import json, torch, discbench
from discbench.scan import cpu
gen = torch.Generator().manual_seed(0)
b, d, l, n = 2, 4, 9, 3
args = dict(u=torch.randn(b, d, l, generator=gen), delta=0.5 * torch.randn(b, d, l, generator=gen),
            A=-torch.rand(d, n, generator=gen) - 0.1, B=torch.randn(b, n, l, generator=gen),
            C=torch.randn(b, n, l, generator=gen), D=torch.randn(d, generator=gen),
            z=torch.randn(b, d, l, generator=gen), delta_softplus=True, method="foh")
kernel = discbench.selective_scan(**args, backend="cpu")
reference = discbench.selective_scan(**args, backend="reference")
print(json.dumps({"discbench": discbench.__file__, "csrc": str(cpu.CSRC),
                  "max_error": (kernel - reference).abs().max().item(),
                  "scale": reference.abs().max().item()}))
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_an_installed_wheel_builds_and_runs_the_cpu_kernel_outside_the_source_tree(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(path, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
          "--quiet", "-w", str(tmp_path / "wheels")], cwd=tmp_path, env=env)
    wheel = next((tmp_path / "wheels").glob("discbench-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)], cwd=tmp_path, env=env)
    venv_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          env=env).stdout.strip())
    # torch & co. from this environment; lines of a .pth are plain paths (their own .pth files,
    # such as an editable discbench's, are not processed), appended after the venv's own.
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    shutil.rmtree(source)  # nothing left to find by accident

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # its own build folder: the kernel is compiled from the wheel's sources, and the shared
    # cache (keyed by source hash, built from the checkout's paths) is left as it was
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")
    checked = json.loads(_run([str(python), "-c", CHECK], cwd=outside, env=env).stdout.strip().splitlines()[-1])
    assert Path(checked["discbench"]).is_relative_to(venv_site)  # the installed copy ran
    assert Path(checked["csrc"]) == venv_site / "discbench" / "csrc"  # with the wheel's sources
    assert list((tmp_path / "torch_extensions").glob("discbench_scan_cpu_*/*.so"))  # compiled here
    assert checked["max_error"] <= 2e-5 * checked["scale"]  # the kernel's fp32 tolerance (test_cpu_kernel)
