"""`discbench bench scan` runs end to end at a tiny shape and reports the fields it promises.

No timing assertions: times are only meaningful at benchmark shapes on a quiet machine.
"""

from __future__ import annotations

import json

import pytest

from discbench.bench import mamba_selective_scan_ref, summary, time_scan
from discbench.cli import main

TINY = ["--batch", "2", "--dim", "4", "--length", "9", "--state", "3", "--repeats", "2"]
FIELDS = {"method", "variant", "backend", "pass", "ms_median", "ms_min", "speedup_vs_ref"}


def test_bench_scan_json_has_one_record_per_row_with_the_fields(capsys):
    assert main(["bench", "scan", *TINY, "--methods", "zoh,rk4/canonical", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(FIELDS <= set(r) for r in records)
    rows = {(r["backend"], r["method"], r["variant"], r["pass"]) for r in records}
    for backend in ("cpu", "torch", "reference"):
        for key in ("zoh/canonical", "zoh/paper", "rk4/canonical"):
            for pass_ in ("fwd", "fwd+bwd"):
                assert (backend, *key.split("/"), pass_) in rows
    assert ("torch.exp", "-", "-", "fwd") in rows
    if mamba_selective_scan_ref() is not None:
        assert ("mamba_ref", "zoh", "paper", "fwd+bwd") in rows
        assert all(r["speedup_vs_ref"] > 0 for r in records if r["backend"] != "torch.exp")
    assert all(r["ms_min"] <= r["ms_median"] for r in records)


def test_bench_scan_table_prints_the_target_ratios(capsys):
    assert main(["bench", "scan", *TINY, "--methods", "zoh,foh/canonical", "--backends", "cpu,torch.exp,mamba_ref",
                 "--passes", "fwd,fwd+bwd", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "zoh/canonical fwd / torch.exp" in out
    assert "worst canonical fwd+bwd / zoh/canonical fwd+bwd" in out
    if mamba_selective_scan_ref() is not None:
        assert "fwd+bwd speedup vs mamba selective_scan_ref" in out


def test_bench_scan_rejects_unknown_choices(capsys):
    assert main(["bench", "scan", *TINY, "--backends", "gpu"]) == 2
    assert "unknown backend 'gpu'; valid: cpu, torch" in capsys.readouterr().err
    assert main(["bench", "scan", *TINY, "--methods", "euler"]) == 2
    assert "unknown method 'euler'" in capsys.readouterr().err


def test_time_scan_is_reusable_by_the_study_runner():
    row = time_scan("highorder", "paper", "cpu", (1, 2, 5, 4), "fwd+bwd", repeats=1)
    assert row["method"] == "highorder" and row["variant"] == "paper" and row["pass"] == "fwd+bwd"
    assert (row["batch"], row["dim"], row["length"], row["state"]) == (1, 2, 5, 4)
    with pytest.raises(ValueError, match="unknown pass 'bwd'"):
        time_scan("zoh", "canonical", "cpu", (1, 2, 5, 4), "bwd", repeats=1)


def test_summary_states_the_three_ratios_from_given_rows():
    rows = [
        {"backend": "torch.exp", "method": "-", "variant": "-", "pass": "fwd", "ms_median": 2.0},
        {"backend": "mamba_ref", "method": "zoh", "variant": "paper", "pass": "fwd+bwd", "ms_median": 7000.0},
        {"backend": "cpu", "method": "zoh", "variant": "canonical", "pass": "fwd", "ms_median": 1.0},
        {"backend": "cpu", "method": "zoh", "variant": "canonical", "pass": "fwd+bwd", "ms_median": 10.0},
        {"backend": "cpu", "method": "rk4", "variant": "canonical", "pass": "fwd+bwd", "ms_median": 14.0},
    ]
    lines = "\n".join(summary(rows))
    assert "min 500x (rk4/canonical" in lines
    assert "zoh/canonical fwd / torch.exp over b*d*l*n: 0.50" in lines
    assert "worst canonical fwd+bwd / zoh/canonical fwd+bwd: 1.40 (rk4" in lines
