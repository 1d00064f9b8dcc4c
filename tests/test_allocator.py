"""discbench.allocator: freed memory stays in the process once retained, and release gives it back.

Each case runs in a fresh interpreter (sys.executable), because a mallopt setting cannot be undone
inside a process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting is glibc's")

# RSS (MiB) with a 24 MiB tensor alive, after it is freed, and after release_freed_memory().
PROBE = """
import json, sys, psutil, torch
from discbench import allocator
retained = allocator.retain_freed_memory() if sys.argv[1] == "retain" else False
rss = lambda: psutil.Process().memory_info().rss / 2 ** 20
x = torch.ones(6 * 2 ** 20)  # 24 MiB, below the retained mmap threshold (32 MiB)
alive = rss()
del x
freed = rss()
allocator.release_freed_memory()
print(json.dumps({"retained": retained, "alive": alive, "freed": freed, "released": rss(),
                  "setting": allocator.allocator_setting()}))
"""


def _probe(mode: str) -> dict:
    from discbench.allocator import ENV

    env = {k: v for k, v in os.environ.items() if k not in ENV}  # glibc's defaults unless retained
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_retained_memory_stays_until_released():
    got = _probe("retain")
    assert got["retained"] is True
    assert got["alive"] - got["freed"] < 4  # the 24 MiB stay resident after the free
    assert got["freed"] - got["released"] > 20  # and go back to the kernel on release
    assert "mallopt mmap_threshold=33554432 trim_threshold=1073741824" in got["setting"]


def test_glibc_defaults_return_a_freed_large_tensor_at_once():
    got = _probe("default")
    assert got["retained"] is False
    assert got["alive"] - got["freed"] > 20
    assert got["setting"] == "glibc defaults"
