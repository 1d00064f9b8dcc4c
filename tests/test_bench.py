"""`discbench bench scan` runs end to end at a tiny shape and reports the fields it promises.

No timing assertions: times are only meaningful at benchmark shapes on a quiet machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from discbench.allocator import allocator_setting
from discbench.bench import (SLOW_BACKENDS, add_vs_mamba, mamba_selective_scan_ref, summary,
                             time_scan)
from discbench.cli import main
from discbench.scan import BACKENDS
from discbench.scan import triton as triton_backend

TINY = ["--batch", "2", "--dim", "4", "--length", "9", "--state", "3", "--repeats", "2"]
FIELDS = {"method", "variant", "backend", "pass", "ms_median", "ms_min", "speedup_vs_ref", "device", "vs_mamba",
          "allocator"}


def test_bench_scan_json_has_one_record_per_row_with_the_fields(capsys):
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--methods", "zoh,rk4/canonical", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(FIELDS <= set(r) for r in records)
    assert all(r["device"] == "cpu" and r["vs_mamba"] is None for r in records)
    assert not any(r["backend"] in ("triton", "mamba") for r in records)  # no CPU defaults
    rows = {(r["backend"], r["method"], r["variant"], r["pass"]) for r in records}
    for backend in ("cpu", "torch", "reference"):
        for key in ("zoh/canonical", "zoh/paper", "rk4/canonical"):
            for pass_ in ("fwd", "fwd+bwd"):
                assert (backend, *key.split("/"), pass_) in rows
    assert ("torch.exp", "-", "-", "fwd") in rows
    if mamba_selective_scan_ref() is not None:
        assert ("mamba_ref", "zoh", "paper", "fwd+bwd") in rows
        assert all(r["speedup_vs_ref"] > 0 for r in records if r["backend"] != "torch.exp")
    # each row states how it was timed: the fast backends --repeats (2), the slow ones
    # --ref-repeats (default 1), at the requested shape
    for r in records:
        assert r["repeats"] == (1 if r["backend"] in SLOW_BACKENDS else 2), r
        assert (r["batch"], r["dim"], r["length"], r["state"]) == (2, 4, 9, 3), r
    # speedup_vs_ref is the reference row's median time over the row's, same pass
    reference = {(r["pass"], r["backend"]): r["ms_median"] for r in records
                 if (r["method"], r["variant"]) == ("zoh", "paper")}
    for r in records:
        if r["backend"] != "torch.exp" and r["ref"] == "mamba_ref":
            assert r["speedup_vs_ref"] == pytest.approx(reference[r["pass"], "mamba_ref"] / r["ms_median"])
        elif r["backend"] != "torch.exp":
            assert r["ref"] == "reference"
            ours = next(o for o in records if o["backend"] == "reference" and
                        (o["method"], o["variant"], o["pass"]) == (r["method"], r["variant"], r["pass"]))
            assert r["speedup_vs_ref"] == pytest.approx(ours["ms_median"] / r["ms_median"])


def test_bench_scan_times_trapezoid_with_a_per_token_lam(capsys):
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--methods", "trapezoid", "--backends", "cpu,reference",
                 "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {(r["backend"], r["method"], r["variant"], r["pass"]) for r in records}
    assert rows == {(b, "trapezoid", v, p) for b in ("cpu", "reference") for v in ("canonical", "paper")
                    for p in ("fwd", "fwd+bwd")}
    assert all(r["ms_median"] > 0 for r in records)


def test_bench_scan_times_ssd_scan_beside_selective_scan(capsys):
    """Mamba-2's SSD rows run on the same inputs, as heads of gcd(d, 64) channels."""
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--methods", "zoh/paper,rk4/canonical",
                 "--backends", "ssd_chunked,ssd_reference,torch", "--passes", "fwd,fwd+bwd", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = {(r["backend"], r["method"], r["variant"], r["pass"]) for r in records}
    for backend in ("ssd_chunked", "ssd_reference", "torch"):
        for key in (("zoh", "paper"), ("rk4", "canonical")):
            for pass_ in ("fwd", "fwd+bwd"):
                assert (backend, *key, pass_) in rows


def test_bench_ssd_rows_compute_ssd_scan():
    from discbench.bench import ScanShape, _scan_call, make_inputs
    from discbench.scan.ssd import ssd_scan

    t = make_inputs(ScanShape(2, 6, 7, 3), torch.float64)
    out = _scan_call("ssd_chunked", "foh", "canonical")(t)
    heads = t["u"].transpose(1, 2).reshape(2, 7, 3, 2)  # gcd(6, 64) = 2 channels per head
    expected = ssd_scan(heads, t["delta"][:, ::2].transpose(1, 2), t["A"][::2, 0], t["B"].transpose(1, 2)[:, :, None],
                        t["C"].transpose(1, 2)[:, :, None], 64, D=t["D"].reshape(3, 2),
                        z=t["z"].transpose(1, 2).reshape(2, 7, 3, 2), dt_bias=t["delta_bias"][::2], dt_softplus=True,
                        method="foh", backend="reference")
    torch.testing.assert_close(out, expected.reshape(2, 7, 6).transpose(1, 2))


def test_bench_scan_table_prints_the_target_ratios(capsys):
    backends = "cpu,torch.exp" + (",mamba_ref" if mamba_selective_scan_ref() is not None else "")
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--methods", "zoh,foh/canonical", "--backends", backends,
                 "--passes", "fwd,fwd+bwd", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "zoh/canonical fwd / torch.exp" in out
    assert "worst canonical fwd+bwd / zoh/canonical fwd+bwd" in out
    if mamba_selective_scan_ref() is not None:
        assert "fwd+bwd speedup vs mamba selective_scan_ref" in out


def test_bench_scan_rejects_unknown_choices(capsys):
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--backends", "gpu"]) == 2
    assert "unknown backend 'gpu'; valid: cpu, triton, mamba, torch" in capsys.readouterr().err
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--methods", "euler"]) == 2
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


def test_bench_scan_device_option(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "scan", *TINY, "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "scan", *TINY, "--device", "cuda"]) == 2
        assert "device 'cuda' was asked for but torch sees no CUDA GPU" in capsys.readouterr().err


def test_bench_scan_rejects_a_requested_backend_that_cannot_run_on_the_device(capsys, monkeypatch):
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--backends", "mamba"]) == 2
    assert "backend 'mamba' cannot run on cpu here: it runs on cuda tensors only" in capsys.readouterr().err
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert main(["bench", "scan", *TINY, "--device", "cpu", "--backends", "triton"]) == 2
    assert "backend 'triton' cannot run on cpu here" in capsys.readouterr().err


def test_bench_scan_times_triton_on_cpu_through_the_interpreter(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    triton_backend.match_interpreter_setting()
    try:
        assert main(["bench", "scan", *TINY, "--device", "cpu", "--backends", "triton", "--methods", "foh/paper",
                     "--repeats", "1", "--json"]) == 0
    finally:
        monkeypatch.undo()
        triton_backend.match_interpreter_setting()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["backend"], r["method"], r["variant"], r["pass"]) for r in records} == {
        ("triton", "foh", "paper", "fwd"), ("triton", "foh", "paper", "fwd+bwd")}


def _row(backend, method, variant, pass_, ms):
    return {"backend": backend, "method": method, "variant": variant, "pass": pass_, "ms_median": ms}


def test_vs_mamba_and_its_summary_from_given_rows():
    rows = [
        _row("mamba", "zoh", "paper", "fwd", 2.0),
        _row("mamba", "zoh", "paper", "fwd+bwd", 5.0),
        _row("triton", "zoh", "paper", "fwd", 1.0),
        _row("triton", "zoh", "paper", "fwd+bwd", 6.0),
        _row("triton", "rk4", "canonical", "fwd", 3.0),
        _row("triton", "rk4", "canonical", "fwd+bwd", 10.0),
        _row("torch.exp", "-", "-", "fwd", 0.5),
    ]
    add_vs_mamba(rows)
    assert [r["vs_mamba"] for r in rows] == [1.0, 1.0, 0.5, 1.2, 1.5, 2.0, 0.25]
    lines = summary(rows, backend="triton")
    assert "fwd triton / mamba_ssm kernel zoh/paper (2.000 ms): zoh/paper 0.50, rk4/canonical 1.50" in lines
    assert "fwd+bwd triton / mamba_ssm kernel zoh/paper (5.000 ms): zoh/paper 1.20, rk4/canonical 2.00" in lines


def test_vs_mamba_is_empty_without_the_anchor():
    rows = [_row("cpu", "zoh", "paper", "fwd", 1.0), _row("mamba", "zoh", "paper", "fwd+bwd", 5.0)]
    add_vs_mamba(rows)
    assert rows[0]["vs_mamba"] is None and rows[1]["vs_mamba"] == 1.0
    assert not any("mamba_ssm kernel" in line for line in summary(rows, backend="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_scan_on_cuda_states_every_row_against_the_mamba_kernel(capsys):
    why = BACKENDS["mamba"].unavailable_reason()
    if why is not None:
        pytest.skip(f"needs mamba_ssm's CUDA kernel (discbench's cuda extra): {why}")
    assert main(["bench", "scan", *TINY, "--device", "cuda", "--backends", "triton,torch.exp",
                 "--methods", "zoh/paper,rk4/canonical", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(FIELDS <= set(r) and r["device"] == "cuda" and r["vs_mamba"] > 0 for r in records)
    anchors = {r["pass"]: r["vs_mamba"] for r in records if r["backend"] == "mamba"}
    assert anchors == {"fwd": 1.0, "fwd+bwd": 1.0}
    assert {(r["method"], r["variant"]) for r in records if r["backend"] == "triton"} == {
        ("zoh", "paper"), ("rk4", "canonical")}
    assert main(["bench", "scan", *TINY, "--device", "cuda", "--methods", "zoh/paper,rk4/canonical"]) == 0
    out = capsys.readouterr().out
    assert "fwd triton / mamba_ssm kernel zoh/paper" in out
    assert "fwd+bwd triton / mamba_ssm kernel zoh/paper" in out


def test_the_allocator_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setattr("discbench.allocator._retained", False)
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    assert allocator_setting() == "glibc defaults"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1073741824")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert allocator_setting() == ("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824 "
                                   "LD_PRELOAD=/usr/lib/libjemalloc.so.2")


MODEL_FIELDS = {"model", "deit", "method", "variant", "task", "resolution", "batch", "amp", "repeats", "threads",
                "vim_ms_median", "vim_ms_min", "deit_ms_median", "deit_ms_min", "vim_img_s", "deit_img_s", "ratio",
                "profile", "load_before", "load_after", "allocator"}


def test_bench_model_json_has_one_record_per_case_with_ratio_and_profile(capsys):
    argv = ["bench", "model", "--model", "vim_micro", "--cases", "inference:16:1,train:16:2", "--patch-size", "4",
            "--num-classes", "5", "--repeats", "1", "--profile-rows", "3", "--method", "foh/paper", "--json"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["task"], r["resolution"], r["batch"]) for r in records] == [("inference", 16, 1), ("train", 16, 2)]
    for r in records:
        assert MODEL_FIELDS <= set(r)
        assert (r["model"], r["deit"], r["method"], r["variant"]) == ("vim_micro", "deit_tiny_patch16_224", "foh", "paper")
        assert r["ratio"] == pytest.approx(r["deit_ms_median"] / r["vim_ms_median"])
        assert r["vim_img_s"] == pytest.approx(r["batch"] * 1e3 / r["vim_ms_median"])
        assert 1 <= len(r["profile"]) <= 3
        assert all({"op", "calls", "self_ms", "self_share", "total_ms"} <= set(row) for row in r["profile"])


def test_bench_model_pair_has_the_same_width_and_depth():
    from discbench.bench_model import build_pair

    vim, deit = build_pair("vim_micro", 16, "zoh", "canonical", num_classes=3, patch_size=4)
    assert vim.embed_dim == deit.embed_dim == 48
    assert len(vim.layers) == len(deit.blocks) == 4
    assert vim.patch_embed.num_patches == deit.patch_embed.num_patches == 16


@pytest.mark.parametrize("bad", [["--cases", "infer:16:1"], ["--cases", "train:16"], ["--resolutions", "0"],
                                 ["--tasks", "predict"], ["--repeats", "0"], ["--method", "euler"]])
def test_bench_model_rejects_bad_arguments(bad, capsys):
    assert main(["bench", "model", "--model", "vim_micro", *bad]) == 2
    assert "discbench bench model:" in capsys.readouterr().err


def test_bench_model_flip_path_times_the_same_vim_without_the_fast_path(capsys):
    argv = ["bench", "model", "--model", "vim_micro", "--cases", "inference:16:1", "--patch-size", "4",
            "--num-classes", "5", "--repeats", "1", "--profile-rows", "0", "--flip-path", "--json"]
    assert main(argv) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["fast_speedup"] == pytest.approx(record["vim_flip_ms_median"] / record["vim_ms_median"])
    assert "mallopt" in record["allocator"]  # the default --allocator retain
