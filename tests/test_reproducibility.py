"""A study re-run at the same commit records the same numbers, bit for bit.

Two `discbench run`s of one small study, each in its own process with its own Ray: the first
runs both trials at once (they share the cores, each in its own worker process), the second one
at a time and with the CPU kernel forced to its narrowest build (DISCBENCH_CPU_ISA=scalar, as on
a machine without AVX2); there Ray Tune reuses the first trial's worker for the second
(`reuse_actors`), so the second trial runs after another in the same process. Everything
recorded must be equal except what measures time or memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from discbench import results
from discbench.cli import main
from discbench.compare import differences
from discbench.scan import cpu

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason=f"the CPU kernel cannot be built here: {cpu.unavailable_reason()}")

# The default study's setting (seqmamba_micro without the conv, MNIST-1D, Δ rescaled at other
# lengths), small: foh/paper is the entry that moved between machines in the issue.
STUDY = """
name: repro
description: two small trials of the default study's kind
methods: [foh/paper, zoh/canonical]
data: {dataset: mnist1d, seq_length: 40, batch_size: 32, train_limit: 256, test_limit: 128}
model: {name: seqmamba_micro, kwargs: {conv: none}}
train: {preset: digits, epochs: 2, lr: 0.005, device: cpu}
measure: {throughput: false, eval_lengths: [20, 40]}
resources: {cpus: 1, gpus: 0, workers: 1}
"""

def _run(study: Path, out: Path, concurrent: int, env: dict) -> results.StudyResults:
    done = subprocess.run([sys.executable, "-m", "discbench.cli", "run", str(study), "--results-dir", str(out),
                           "--num-cpus", "2", "--max-concurrent", str(concurrent)],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return results.load_study(out / "repro")


@pytest.mark.slow
def test_a_rerun_records_the_same_numbers_whichever_trials_share_the_cores_and_whatever_the_isa(tmp_path):
    study = tmp_path / "repro.yaml"
    study.write_text(STUDY)
    first = _run(study, tmp_path / "first", concurrent=2, env={})
    second = _run(study, tmp_path / "second", concurrent=1, env={"DISCBENCH_CPU_ISA": "scalar"})
    assert set(first.trials["status"]) == {"ok"}
    assert len(first.epochs) == 4 and len(first.measurements) == 4  # 2 trials × (2 epochs, 2 lengths)
    # everything recorded but times, memory and provenance (discbench compare's rule), bit for bit
    assert differences(first.path, second.path) == []
    assert main(["compare", str(first.path), str(second.path)]) == 0
