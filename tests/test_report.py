"""`discbench report` on small studies written by the real results writer.

The numbers in the tables are checked against values worked out by hand below; the bootstrap
interval against the exact bootstrap distribution, enumerated.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as scipy_stats

from discbench import results
from discbench.cli import main as cli_main
from discbench.report import build_report, stats
from discbench.report.study_view import build_view
from discbench.kinds.kernels import scan_time_table
from discbench.kinds.numerics import numerics_table
from discbench.report.tables import (ablation_bidirectional_table, ablation_classification_table, accuracy_table, cost_table,
                                     published_accuracy_table)

T_975 = {1: 12.706204736174707, 2: 4.302652729911275}  # Student t quantiles (0.975; dof), from tables

# top-1 (%) per method and seed; top-5 = top-1 + 20. rk4/canonical seed 2 diverges and
# bilinear/canonical seed 0 fails, so these are the hand-checked values.
TOP1 = {
    ("zoh", "paper"): {0: 70.0, 1: 72.0, 2: 74.0},
    ("foh", "canonical"): {0: 73.0, 1: 74.0, 2: 78.0},
    ("rk4", "canonical"): {0: 71.0, 1: 75.0},
}
TRAIN_IPS = {"zoh/paper": 100.0, "foh/canonical": 80.0, "rk4/canonical": 50.0, "bilinear/canonical": 90.0}
STATED = {"zoh/paper": 1, "foh/canonical": 2, "rk4/canonical": 4}


def _row(study: str, method: str, variant: str, seed: int, status: str, *, model="vim_micro",
         dataset="digits", image_size=32, kwargs=None, data=None, **values) -> dict:
    config = {"method": method, "variant": variant, "seed": seed,
              "data": {"dataset": dataset, "image_size": image_size, **(data or {})},
              "model": {"name": model, "kwargs": kwargs or {}}, "train": {"preset": "digits"}}
    return {"study": study, "trial_id": f"{model}-{method}-{variant}-{'-'.join(map(str, (kwargs or {}).values()))}-s{seed}",
            "method": method, "variant": variant, "method_key": f"{method}/{variant}", "seed": seed,
            "model": model, "dataset": dataset, "image_size": image_size, "status": status,
            "config": config, "device": "cpu:test:2 cores", "discbench_version": "0.1.0",
            "torch_version": "2.x-test", "git_commit": "0123456789abcdef", "host": "testhost", **values}


def _numerics_rows(key: str) -> list[dict]:
    order = STATED[key]
    rows = [{"quantity": "convergence", "name": "error", "value": 0.5 * (3 / n) ** order, "unit": "abs",
             "method_key": key, "steps": n, "dt": 3 / n} for n in (40, 80, 160, 320)]
    rows.append({"quantity": "order", "name": "measured_order", "value": order + 0.01, "method_key": key})
    rows.append({"quantity": "order", "name": "stated_order", "value": order, "method_key": key})
    rows.append({"quantity": "stability", "name": "bound", "value": -2.785 if key.startswith("rk4") else -math.inf,
                 "method_key": key})
    ms = {"zoh/paper": 2.0, "foh/canonical": 3.0, "rk4/canonical": 5.0}[key]
    rows += [{"quantity": "scan_time", "name": "ms_median", "value": ms * length / 64, "unit": "ms", "method_key": key,
              "backend": "torch", "pass": "fwd", "batch_size": 2, "length": length} for length in (64, 256)]
    return rows


def _resolution_rows() -> list[dict]:
    rows = []
    for model, ips, mem, oom_from in (("vim_tiny_patch16_224", 40.0, 100.0, None),
                                      ("deit_tiny_patch16_224", 80.0, 50.0, 1248)):
        for step, resolution in enumerate((224, 512, 1248)):
            status = "oom" if oom_from and resolution >= oom_from else "ok"
            scale = 4.0 ** step
            context = dict(model=model, method_key="zoh/paper", batch_size=8, resolution=resolution, status=status)
            rows.append({"quantity": "throughput", "name": "infer_images_per_s",
                         "value": None if status == "oom" else ips / scale * (1 if model.startswith("deit") else 1.5 ** step),
                         "unit": "images/s", **context})
            rows.append({"quantity": "memory", "name": "peak_mem_mb", "value": None if status == "oom" else mem * scale,
                         "unit": "MiB", **context})
    return rows


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    study = root / "fake"
    results.write_study_meta(study, "fake", "name: fake\n")
    for (method, variant), seeds in TOP1.items():
        key = f"{method}/{variant}"
        for seed in (0, 1, 2):
            diverged = seed not in seeds
            row = _row("fake", method, variant, seed, "diverged" if diverged else "ok",
                       top1=None if diverged else seeds[seed], top5=None if diverged else seeds[seed] + 20,
                       train_images_per_s=TRAIN_IPS[key], infer_images_per_s=2 * TRAIN_IPS[key],
                       peak_mem_mb=500.0 + seed, epochs_done=3 if not diverged else 2, num_classes=10,
                       diverged_at="epoch 2, step 57" if diverged else None)  # as train._summary writes it
            path = results.trial_dir(study, row["trial_id"])
            results.write_trial(path, row)
            for epoch in range(1, 4 if not diverged else 3):
                results.append_epoch(path, {"epoch": epoch, "train_loss": 2.0 / epoch + seed * 0.1,
                                            "val_loss": 2.2 / epoch, "top1": (seeds.get(seed, 60.0)) * epoch / 3,
                                            "lr": 1e-3})
            if seed == 0:
                results.append_measurements(path, _numerics_rows(key))
            if key == "zoh/paper" and seed == 0:
                results.append_measurements(path, _resolution_rows())
    failed = _row("fake", "bilinear", "canonical", 0, "failed", error="RuntimeError: boom\ntrace")
    results.write_trial(results.trial_dir(study, failed["trial_id"]), failed)
    results.consolidate(study)
    return study


@pytest.fixture(scope="module")
def digits_report(digits_study, tmp_path_factory):
    return build_report(digits_study, tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def digits_view(digits_study):
    return build_view(results.load_study(digits_study))


# ----------------------------------------------------------------------------- statistics


def test_summary_and_paired_t_interval_match_hand_computation():
    s = stats.summarize([70.0, 72.0, 74.0])
    assert (s.mean, s.std, s.n) == (72.0, 2.0, 3)
    d = stats.paired_difference([3.0, 2.0, 4.0], [0.0, 0.0, 0.0])  # mean 3, sd 1, n 3
    half = T_975[2] * 1.0 / math.sqrt(3)
    assert d.how == "paired t" and d.delta == pytest.approx(3.0)
    assert (d.low, d.high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    one = stats.paired_difference([1.5], [0.0])
    assert one.how == "n=1" and math.isnan(one.low) and not one.has_interval


def test_welch_interval_matches_hand_computation():
    a, b = [71.0, 75.0], [70.0, 72.0, 74.0]
    d = stats.welch_difference(a, b)
    var_a, var_b = 8.0 / 2, 4.0 / 3  # s²/n of each group
    dof = (var_a + var_b) ** 2 / (var_a ** 2 / 1 + var_b ** 2 / 2)
    half = float(scipy_stats.t.ppf(0.975, dof)) * math.sqrt(var_a + var_b)
    assert d.how == "Welch" and d.delta == pytest.approx(1.0) and d.seed_dof == pytest.approx(dof)
    assert (d.low, d.high) == (pytest.approx(1 - half), pytest.approx(1 + half))
    constant = stats.welch_difference([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (constant.low, constant.high, constant.p) == (1.0, 1.0, 0.0)


def test_difference_pairs_by_seed_only_when_at_least_two_seeds_match():
    assert stats.difference_to_baseline({0: 3.0, 1: 5.0}, {0: 1.0, 1: 2.0}).how == "paired t"
    assert stats.difference_to_baseline({0: 3.0, 1: 5.0}, {0: 1.0, 2: 2.0, 3: 4.0}).how == "Welch"
    assert stats.difference_to_baseline({0: 3.0}, {0: 1.0}).how == "n=1"


# ----------------------------------------------------------------------------- tables


def test_accuracy_table_numbers(digits_view):
    table = accuracy_table(digits_view)
    data = table.data.set_index("method_key")
    zoh, foh, rk4 = data.loc["zoh/paper"], data.loc["foh/canonical"], data.loc["rk4/canonical"]
    assert (zoh.top1_mean, zoh.top1_std, zoh.top1_n) == (72.0, 2.0, 3)
    assert foh.top1_mean == pytest.approx(75.0) and foh.top1_std == pytest.approx(math.sqrt(7.0))
    assert foh.top5_mean == pytest.approx(95.0)
    # foh − zoh paired by seed: differences 3, 2, 4.
    half = T_975[2] / math.sqrt(3)
    assert foh.top1_delta == pytest.approx(3.0) and foh.top1_delta_how == "paired t"
    assert (foh.top1_delta_low, foh.top1_delta_high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    # rk4 ran seeds 0, 1 (seed 2 diverged, excluded): mean 73, sd √8, paired with zoh on the two
    # seeds both finished: differences 1 and 3.
    assert (rk4.top1_mean, rk4.top1_n) == (73.0, 2) and rk4.top1_std == pytest.approx(math.sqrt(8.0))
    assert rk4.top1_delta == pytest.approx(2.0) and rk4.top1_delta_how == "paired t"
    assert rk4.diverged == 1
    assert data.loc["bilinear/canonical"].failed == 1 and data.loc["bilinear/canonical"].top1_n == 0

    shown = table.display.set_index("method")
    assert shown.loc["zoh/paper", "top-1 (%)"] == "72.00 ± 2.00 (n=3)"
    assert shown.loc["rk4/canonical", "top-1 (%)"] == "73.00 ± 2.83 (n=2); diverged (epoch 2, step 57)"
    assert shown.loc["bilinear/canonical", "top-1 (%)"] == "failed"
    delta_column = "Δ top-1 vs zoh/paper [95% CI]"
    # foh's raw interval [0.52, 5.48] excludes 0 (paired t = 3√3, p = 0.035), but the default
    # family holds 2 tests (foh, rk4): Holm doubles the smaller p to 0.070, so no star.
    p_foh = 2 * scipy_stats.t.sf(3 * math.sqrt(3), 2)
    assert foh.top1_delta_p == pytest.approx(p_foh) and foh.top1_delta_p_adj == pytest.approx(2 * p_foh)
    assert foh.top1_family == "every method vs zoh/paper at the training length" and foh.top1_family_size == 2
    assert foh.top1_correction == "holm" and bool(foh.top1_family_primary)
    assert shown.loc["foh/canonical", delta_column] == f"+3.00 [+{3 - half:.2f}, +{3 + half:.2f}] (paired t)"
    assert shown.loc["foh/canonical", "p (raw → adjusted)"] == f"{p_foh:.3f} → {2 * p_foh:.3f}"
    assert shown.loc["rk4/canonical", delta_column].startswith("+2.00 [")
    assert shown.loc["zoh/paper", delta_column] == "baseline"
    assert bool(foh.top1_delta_excludes_zero) and not bool(foh.top1_delta_significant)
    assert not bool(rk4.top1_delta_excludes_zero)
    # MDE at the family's α/m = 0.025: paired, sd of the differences 1 (foh, n 3) and √2 (rk4, n 2).
    assert foh.top1_delta_mde == pytest.approx(stats.minimum_detectable_effect(1.0, 3, alpha=0.025))
    assert rk4.top1_delta_mde == pytest.approx(stats.minimum_detectable_effect(math.sqrt(2), 2, alpha=0.025))
    assert shown.loc["foh/canonical", "MDE (points)"] == f"{foh.top1_delta_mde:.2f}"
    assert shown.loc["bilinear/canonical", "MDE (points)"] == "—"
    assert "* after a Δ: the difference survives its family's correction" in table.caption
    assert "80% power" in table.caption and "not the size of any difference" in table.caption
    assert ("Families and corrections: “every method vs zoh/paper at the training length” (primary; 2 tests, "
            "Holm (family-wise error rate))") in table.caption
    # rk4 diverged on 1 of its 3 finished seeds, zoh on none: the rate, its exact interval, Fisher's test.
    assert (rk4.finished, rk4.diverged_rate) == (3, pytest.approx(1 / 3))
    assert rk4.diverged_p == pytest.approx(1.0) and rk4.diverged_high == pytest.approx(scipy_stats.beta.ppf(0.975, 2, 2))
    assert shown.loc["rk4/canonical", "diverged [95% CI]"].startswith("1/3 = 33% [1%, 91%]; Fisher p 1.000")
    # The sensitivity Δ: rk4's diverged seed 2 scores chance (100/10 classes), paired with zoh:
    # differences 71 − 70, 75 − 72, 10 − 74.
    assert rk4.fallback == "chance (100/classes)" and rk4.delta_fallback_how == "paired t"
    assert rk4.delta_fallback == pytest.approx((1 + 3 - 64) / 3)
    assert shown.loc["rk4/canonical", "Δ top-1, a diverged seed = chance (100/classes)"].startswith("−20.00 [")
    assert math.isnan(foh.delta_fallback)  # neither foh nor zoh diverged
    best_row = list(shown.index).index("foh/canonical")
    assert (best_row, "top-1 (%)") in table.bold and len([c for c in table.bold if c[1] == "top-1 (%)"]) == 1
    assert "excluded from the means" in table.caption and "cpu:test:2 cores" in table.caption


def test_cost_numerics_tables(digits_view):
    cost = cost_table(digits_view)
    data = cost.data.set_index("method_key")
    assert data.loc["foh/canonical", "train_images_per_s_rel"] == pytest.approx(0.8)
    assert data.loc["rk4/canonical", "peak_mem_mb"] == pytest.approx(501.0)  # all three seeds, diverged too
    shown = cost.display.set_index("method")
    assert shown.loc["foh/canonical", "train images/s"] == "80.0 (×0.80)"
    # The cost table shows the largest scan measured (L=256), the scan-time table every length.
    assert shown.loc["rk4/canonical", "scan fwd ms (torch, b=2, L=256)"] == "20.000 (×2.50)"
    scans = scan_time_table(digits_view).display.set_index("method")
    assert scans.loc["foh/canonical", "torch fwd, b=2, L=64 (ms)"] == "3.000 (×1.50)"

    numerics = numerics_table(digits_view).display.set_index("method")
    assert numerics.loc["rk4/canonical", "stated order (METHODS.md)"] == "4"
    assert numerics.loc["rk4/canonical", "measured order"] == "4.01"
    assert numerics.loc["rk4/canonical", "stated stability bound"] == "−2.785"
    assert numerics.loc["foh/canonical", "measured stability bound"] == "A-stable (−∞)"


def test_missing_and_failed_trials_are_listed(digits_report):
    missing = pd.read_csv(digits_report.out_dir / "missing.csv")
    assert set(missing["status"]) == {"failed", "diverged", "not run"}
    assert missing.loc[missing["status"] == "failed", "detail"].item() == "RuntimeError: boom"
    not_run = missing[missing["status"] == "not run"]
    assert sorted(not_run["seed"]) == [1, 2] and set(not_run["condition"]) == {"bilinear/canonical"}


def test_report_writes_every_format_and_valid_figures(digits_report):
    out = digits_report.out_dir
    for name in ("accuracy", "cost", "scan_time", "numerics", "efficiency", "missing"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    tex = (out / "accuracy.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{75.00 $\pm$ 2.65 (n=3)}" in tex
    figures = sorted(out.glob("fig_*.png"))
    assert {p.stem for p in figures} == {"fig_accuracy", "fig_tradeoff", "fig_training_curves",
                                         "fig_convergence", "fig_resolution"}
    for png in figures:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.size[0] > 300 and image.size[1] > 200
        assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")
    index = (out / "index.md").read_text()
    for figure in figures:
        assert f"]({figure.name})" in index
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures) and 'src="fig_' not in page
    assert "<table" in page and "0123456789ab" in page


def test_efficiency_table_beside_published_claim(digits_report):
    report = digits_report
    eff = pd.read_csv(report.out_dir / "efficiency.csv").set_index("resolution")
    # 512 px: Vim 40·1.5/4 = 15 images/s vs DeiT 80/4 = 20; memory 400 vs 200 MiB.
    assert eff.loc[512, "speed_ratio"] == pytest.approx(0.75)
    assert eff.loc[512, "memory_saved_pct"] == pytest.approx(-100.0)
    assert eff.loc[1248, "deit_infer_images_per_s_status"] == "oom"
    assert eff.loc[1248, "published_speed_ratio"] == 2.8 and eff.loc[1248, "published_memory_saved_pct"] == 86.8
    assert "OOM" in (report.out_dir / "efficiency.md").read_text()


# ----------------------------------------------------------------------------- published numbers


@pytest.fixture(scope="module")
def imagenet_study(tmp_path_factory) -> Path:
    """Vim-Ti on ImageNet: three of Table 5's classification designs (2 seeds each), two more
    bidirectional strategies without a class token (Table 4), and DeiT-Ti."""
    study = tmp_path_factory.mktemp("results") / "ablation"
    results.write_study_meta(study, "ablation", "name: ablation\n")
    top1 = {"middle": (76.0, 76.4), "head": (75.0, 75.2), "none": (73.5, 73.9)}
    for cls_token, values in top1.items():
        for seed, value in enumerate(values):
            row = _row("ablation", "zoh", "paper", seed, "ok", model="vim_tiny_patch16_224", dataset="imagenet",
                       image_size=224, kwargs={"cls_token": cls_token}, top1=value)
            results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    for bidirectional, values in {"none": (72.0, 72.4), "ssm": (72.5,)}.items():
        for seed, value in enumerate(values):
            row = _row("ablation", "zoh", "paper", seed, "ok", model="vim_tiny_patch16_224", dataset="imagenet",
                       image_size=224, kwargs={"cls_token": "none", "bidirectional": bidirectional}, top1=value)
            results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    deit = _row("ablation", "zoh", "paper", 0, "ok", model="deit_tiny_patch16_224", dataset="imagenet",
                image_size=224, top1=72.0)
    results.write_trial(results.trial_dir(study, deit["trial_id"]), deit)
    results.consolidate(study)
    return study


def test_published_and_ablation_tables_show_the_gap(imagenet_study):
    view = build_view(results.load_study(imagenet_study))
    table, why = published_accuracy_table(view)
    assert why == ""
    data = table.data.set_index("published_model")
    assert data.loc["Vim-Ti", "published_top1"] == 76.1
    assert data.loc["Vim-Ti", "top1_mean"] == pytest.approx(76.2) and data.loc["Vim-Ti", "gap"] == pytest.approx(0.1)
    assert data.loc["DeiT-Ti", "gap"] == pytest.approx(-0.2)
    assert any("published (arXiv:2401.09417, Table 1)" in c for c in table.display.columns)

    ablation = ablation_classification_table(view)
    rows = ablation.data.set_index("strategy")
    assert rows.loc["head class token", "top1_mean"] == pytest.approx(75.1)
    assert rows.loc["head class token", "gap"] == pytest.approx(75.1 - 75.2)
    assert rows.loc["mean pool", "gap"] == pytest.approx(73.7 - 73.9)
    assert rows.loc["max pool", "top1_n"] == 0  # published only
    assert list(ablation.display["strategy"][:5]) == ["mean pool", "max pool", "head class token",
                                                       "double class token", "middle class token"]

    # Table 4 rows are the trials without a class token; Vim's default scan is the mean-pool trials.
    bidirectional = ablation_bidirectional_table(view)
    rows = bidirectional.data.set_index("strategy")
    assert rows.loc["none", "top1_mean"] == pytest.approx(72.2) and rows.loc["none", "gap"] == pytest.approx(-1.0)
    assert rows.loc["bidirectional SSM", "top1_n"] == 1
    assert rows.loc["bidirectional SSM + conv1d", "top1_mean"] == pytest.approx(73.7)
    assert rows.loc["bidirectional block", "top1_n"] == 0
    shown = bidirectional.display.set_index("strategy")
    assert shown.loc["bidirectional SSM", "ours: vim_tiny_patch16_224, zoh/paper top-1 (%)"] == "72.50 (n=1)"
    assert shown.loc["none", "published (arXiv:2401.09417, Table 4) ADE20K mIoU"] == "32.3"


def test_no_published_gap_for_another_dataset(digits_view):
    table, why = published_accuracy_table(digits_view)
    assert table is None and "digits" in why and "ImageNet" in why


# ----------------------------------------------------------------------------- command line


def test_cli_reports_a_study_by_name(digits_study, tmp_path, capsys):
    code = cli_main(["report", "fake", "--results-dir", str(digits_study.parent), "--out", str(tmp_path),
                     "--format", "md,csv"])
    assert code == 0
    out = tmp_path / "fake"
    assert (out / "index.md").exists() and (out / "accuracy.csv").exists()
    assert not (out / "accuracy.tex").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("setup, expected", [
    ("empty", "no studies in"),
    ("foreign", "is not a discbench results folder"),
    ("unknown", "unknown study 'nope'"),
    ("no_trials", "has no trials.parquet"),
])
def test_cli_errors_are_clear(tmp_path, capsys, setup, expected):
    root = tmp_path / "results"
    root.mkdir()
    args = ["report", "--results-dir", str(root), "--out", str(tmp_path / "reports")]
    if setup == "foreign":
        (root / "other").mkdir()
        (root / "other" / "data.txt").write_text("x")
        args.insert(1, str(root / "other"))
    elif setup == "unknown":
        args.insert(1, "nope")
    elif setup == "no_trials":
        results.write_study_meta(root / "empty_study", "empty_study", "")
    assert cli_main(args) == 2
    assert expected in capsys.readouterr().err


def test_cli_rejects_unknown_format(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["report", "--format", "md,docx", "--results-dir", str(tmp_path)])
    assert "valid formats: md, tex, csv, html" in capsys.readouterr().err


def test_trial_folders_newer_than_tables_are_gathered(digits_study, tmp_path):
    study = tmp_path / "copy"
    results.write_study_meta(study, "copy", "")
    row = _row("copy", "zoh", "paper", 0, "ok", top1=50.0)
    results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    report = build_report(study, tmp_path / "reports")  # no trials.parquet yet: gathered on the fly
    data = pd.read_csv(report.out_dir / "accuracy.csv")
    assert data["top1_mean"].tolist() == [50.0]
    assert json.loads((study / "study.json").read_text())["name"] == "copy"


def test_a_numerics_only_study_reports_what_it_has(tmp_path):
    study = tmp_path / "numerics"
    results.write_study_meta(study, "numerics", "")
    for key in STATED:
        method, variant = key.split("/")
        row = _row("numerics", method, variant, 0, "ok")
        path = results.trial_dir(study, row["trial_id"])
        results.write_trial(path, row)
        results.append_measurements(path, _numerics_rows(key))
    results.consolidate(study)
    report = build_report(study, tmp_path / "reports")
    names = {p.name for p in report.files}
    assert {"numerics.md", "fig_convergence.png", "index.md"} <= names
    assert "accuracy.md" not in names and "fig_accuracy.png" not in names
    assert any("no trial of this study recorded a top-1" in note for note in report.notes)
    assert report.findings == []  # nothing to compare: no sentence about accuracy


def test_findings_without_the_baseline_say_so(tmp_path):
    study = tmp_path / "nobase"
    results.write_study_meta(study, "nobase", "")
    for seed, value in enumerate((60.0, 62.0)):
        row = _row("nobase", "foh", "canonical", seed, "ok", top1=value)
        results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    results.consolidate(study)
    from discbench.report.findings import accuracy_findings

    assert accuracy_findings(build_view(results.load_study(study))) == [
        "The baseline zoh/paper is absent from this study: no method is compared to it."]


# ----------------------------------------------------------------------------- minimum detectable effect


def _power_by_integration(effect: float, se: float, dof: int, alpha: float = 0.05) -> float:
    """Two-sided t-test power without scipy's noncentral t: T′ = (Z + λ)/√(V/dof), V ~ χ²(dof),
    so P(|T′| > c) = E_V[Φ(λ − c√(V/dof)) + Φ(−λ − c√(V/dof))], integrated over V."""
    from scipy import integrate
    from scipy import stats as st

    c, shift = st.t.ppf(1 - alpha / 2, dof), effect / se
    integrand = lambda v: (st.norm.cdf(shift - c * math.sqrt(v / dof)) + st.norm.cdf(-shift - c * math.sqrt(v / dof))) \
        * st.chi2.pdf(v, dof)
    return integrate.quad(integrand, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("sd, n, n_other", [(1.0, 2, None), (1.0, 3, None), (2.5, 5, None), (0.7, 10, None),
                                            (1.0, 2, 3), (3.0, 4, 6)])
def test_mde_is_where_the_exact_power_is_80_percent(sd, n, n_other):
    mde = stats.minimum_detectable_effect(sd, n, n_other)
    dof = n - 1 if n_other is None else n + n_other - 2
    se = sd / math.sqrt(n) if n_other is None else sd * math.sqrt(1 / n + 1 / n_other)
    assert _power_by_integration(mde, se, dof) == pytest.approx(0.8, abs=1e-6)
    assert _power_by_integration(0.9 * mde, se, dof) < 0.8  # and it is the smallest such difference
    # Few seeds need more than the normal approximation (z_0.975 + z_0.8)·se.
    assert mde > 2.8016 * se


def test_mde_exact_values():
    # One-sample/paired t, n = 10, α = 0.05 two-sided, 80% power: effect size d = 0.996 (G*Power: 0.9959).
    assert stats.minimum_detectable_effect(1.0, 10) == pytest.approx(0.99600, abs=5e-5)
    # The MDE scales with the sd.
    assert stats.minimum_detectable_effect(3.0, 10) == pytest.approx(3 * stats.minimum_detectable_effect(1.0, 10))


def test_mde_tends_to_the_normal_approximation_for_many_seeds():
    z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.80}
    n = 4000
    assert stats.minimum_detectable_effect(2.0, n) == pytest.approx(z * 2.0 / math.sqrt(n), rel=2e-3)
    assert stats.minimum_detectable_effect(2.0, n, n) == pytest.approx(z * 2.0 * math.sqrt(2 / n), rel=2e-3)


def test_mde_matches_a_simulation_of_the_t_test():
    from scipy import stats as st

    rng = np.random.default_rng(1)
    trials = 40_000
    # Paired: n = 5 differences with sd 2 and true mean = MDE.
    mde = stats.minimum_detectable_effect(2.0, 5)
    d = rng.normal(mde, 2.0, size=(trials, 5))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(5))
    assert np.mean(np.abs(t) > st.t.ppf(0.975, 4)) == pytest.approx(0.8, abs=0.012)
    # Unpaired: groups of 4 and 6 with sd 1.5 and means MDE apart, pooled t-test.
    mde = stats.minimum_detectable_effect(1.5, 4, 6)
    a, b = rng.normal(mde, 1.5, size=(trials, 4)), rng.normal(0.0, 1.5, size=(trials, 6))
    pooled = np.sqrt((3 * a.var(axis=1, ddof=1) + 5 * b.var(axis=1, ddof=1)) / 8)
    t = (a.mean(axis=1) - b.mean(axis=1)) / (pooled * math.sqrt(1 / 4 + 1 / 6))
    assert np.mean(np.abs(t) > st.t.ppf(0.975, 8)) == pytest.approx(0.8, abs=0.012)


def test_mde_with_fewer_than_two_values_is_none():
    assert math.isnan(stats.minimum_detectable_effect(1.0, 1))
    assert math.isnan(stats.minimum_detectable_effect(1.0, 1, 5))
    assert math.isnan(stats.minimum_detectable_effect(math.nan, 4))
    assert stats.minimum_detectable_effect(0.0, 4) == 0.0
    one = stats.difference_to_baseline({0: 3.0}, {0: 1.0})
    assert one.how == "n=1" and math.isnan(one.mde()) and not one.excludes_zero
    lone = stats.difference_to_baseline({0: 3.0}, {1: 1.0, 2: 2.0})
    assert lone.how == "n=1" and math.isnan(lone.mde())


def test_mde_paired_uses_the_differences_and_unpaired_the_pooled_sd():
    base = {0: 70.0, 1: 75.0, 2: 80.0, 3: 72.0}
    cand = {s: v + 1.0 + 0.1 * s for s, v in base.items()}  # shares each seed's noise
    paired = stats.difference_to_baseline(cand, base)
    diffs = [cand[s] - base[s] for s in base]
    assert paired.how == "paired t"
    assert paired.mde() == pytest.approx(stats.minimum_detectable_effect(float(np.std(diffs, ddof=1)), 4))
    shifted = {s + 10: v for s, v in cand.items()}  # other seeds: the same numbers, unpaired
    unpaired = stats.difference_to_baseline(shifted, base)
    assert unpaired.how == "Welch"
    assert unpaired.mde() == pytest.approx(stats.minimum_detectable_effect(
        stats.pooled_std(list(cand.values()), list(base.values())), 4, 4))
    assert paired.mde() < 0.1 * unpaired.mde()  # pairing removes the seed-to-seed spread
    assert stats.pooled_std([1.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(math.sqrt((2 + 8) / 3))


@pytest.mark.parametrize("low, high, marked", [(0.5, 1.0, True), (-2.0, -0.1, True), (-1.0, 0.5, False),
                                               (0.0, 1.0, False), (math.nan, math.nan, False)])
def test_a_difference_is_marked_only_when_its_interval_excludes_zero(low, high, marked):
    assert stats.Difference(0.7, low, high, "paired t", 3).excludes_zero is marked


def test_an_mde_beyond_the_range_of_top1_is_said_to_detect_nothing(digits_view, monkeypatch):
    from discbench.report import findings

    data = accuracy_table(digits_view).data.set_index("method_key")
    mdes = data["top1_delta_mde"].dropna()
    # a range between the MDEs puts the wider ones beyond it and leaves the narrower ones stated
    cut = float(mdes.sort_values().iloc[len(mdes) // 2 - 1:len(mdes) // 2 + 1].mean())
    monkeypatch.setattr(findings, "TOP1_RANGE_POINTS", cut)
    sentence = next(s for s in findings.accuracy_findings(digits_view) if s.startswith("vim_micro: "))
    beyond = sorted(mdes[mdes > cut].index)
    assert beyond and f"design: for {', '.join(k for k in data.index if k in beyond)} the seeds' spread is so wide" in sentence
    widest_stated = mdes[mdes <= cut].idxmax()
    assert f"a true difference of {mdes[widest_stated]:.2f} points" in sentence
    assert f"a true difference of {mdes.max():.2f} points" not in sentence


def test_findings_state_the_family_the_verdicts_the_design_and_every_divergence(digits_report, digits_view):
    data = accuracy_table(digits_view).data.set_index("method_key")
    converged, untuned, validation, families_sentence, sentence, diverged = digits_report.findings
    assert converged.startswith("Not converged: 8 of 8 finished trials did not converge by the study's rule")
    assert untuned.startswith("Untuned: every method ran at one shared recipe")
    assert validation.startswith("On validation (the last epoch's top-1; what a choice between study designs may "
                                 "read, not a verdict): ")
    assert families_sentence == (
        "Families and corrections: “every method vs zoh/paper at the training length” (primary; 2 tests, Holm "
        "(family-wise error rate)); “divergence rate vs the baseline (Fisher's exact test)” (secondary; 1 test, "
        "Holm (family-wise error rate)).")
    assert sentence.startswith("vim_micro: no top-1 difference to zoh/paper survives Holm (family-wise error rate)")
    assert "foh/canonical: the raw interval excludes 0 but not after the correction" in sentence
    rk4_mde = data.loc["rk4/canonical", "top1_delta_mde"]
    assert f"a true difference of {rk4_mde:.2f} points (the largest, rk4/canonical;" in sentence
    assert "by more than" not in sentence  # the MDE is never worded as a bound on the effect
    assert diverged.startswith("vim_micro: rk4/canonical diverged on 1 of 3 finished seeds, 33% [exact 95% "
                               "interval 1%, 91%], against 0 of 3 for zoh/paper (Fisher's exact p 1.000")
    assert "scoring each diverged seed as chance (100/classes), Δ top-1 = −20.00 [" in diverged
    assert "beside the per-protocol Δ +2.00" in diverged
    index = (digits_report.out_dir / "index.md").read_text()
    assert "## Findings" in index and sentence in index
    assert "<h2>Findings</h2>" in (digits_report.out_dir / "report.html").read_text()


# ----------------------------------------------------------------------------- divergence as written


def test_diverged_at_is_read_as_training_writes_it():
    from discbench.report.study_view import divergence_text, parse_divergence

    assert parse_divergence("epoch 3, step 120") == {"epoch": 3, "step": 120}
    assert divergence_text("epoch 3, step 120") == "diverged (epoch 3, step 120)"
    assert parse_divergence({"epoch": 2.0, "step": 7}) == {"epoch": 2, "step": 7}
    assert parse_divergence('{"epoch": 1, "step": 4}') == {"epoch": 1, "step": 4}
    assert parse_divergence(None) == {} and parse_divergence("somewhere") == {"where": "somewhere"}


# ----------------------------------------------------------------------------- transfer, side by side, λ

SEQ_MODEL = "seq_micro"
TRAIN_LENGTH = 128
EVAL_LENGTHS = (64, 128, 256)
CONV_BASE = {"causal": 80.0, "none": 70.0}
LENGTH_DROP = {64: -10.0, 128: 0.0, 256: -20.0}
# Per-seed noise: foh − zoh = 2.5, 2.0, 3.0 (mean 2.5, sd 0.5); trapezoid − zoh = −1, −2, 0 (mean −1, sd 1).
SEQ_NOISE = {"zoh/paper": (0.0, 1.0, 2.0), "foh/paper": (2.5, 3.0, 5.0), "trapezoid/paper": (-1.0, -1.0, 2.0)}
FOH_P = 2 * scipy_stats.t.sf(2.5 / (0.5 / math.sqrt(3)), 2)  # paired t of foh − zoh


def _seq_top1(key: str, conv: str, seed: int, length: int) -> float:
    return CONV_BASE[conv] + SEQ_NOISE[key][seed] + LENGTH_DROP[length]


@pytest.fixture(scope="module")
def transfer_study(tmp_path_factory) -> Path:
    """A 1-D model with conv causal/none; zoh/paper, foh/paper and trapezoid/paper (a method
    this registry may not know yet) over 3 seeds, except trapezoid with conv=none (seed 0 only);
    transfer rows at L′ = 64, 128 (the training length), 256; learned λ for trapezoid."""
    study = tmp_path_factory.mktemp("results") / "transfer"
    results.write_study_meta(study, "transfer", "name: transfer\n")
    for key in SEQ_NOISE:
        method, variant = key.split("/")
        for conv in CONV_BASE:
            for seed in (0, 1, 2):
                if key == "trapezoid/paper" and conv == "none" and seed > 0:
                    continue
                row = _row("transfer", method, variant, seed, "ok", model=SEQ_MODEL, dataset="mnist1d",
                           kwargs={"conv": conv}, data={"seq_length": TRAIN_LENGTH},
                           top1=_seq_top1(key, conv, seed, TRAIN_LENGTH))
                path = results.trial_dir(study, row["trial_id"])
                results.write_trial(path, row)
                results.append_measurements(path, [
                    {"quantity": "transfer", "name": "top1", "value": _seq_top1(key, conv, seed, length), "unit": "%",
                     "length": length, "delta_scale": TRAIN_LENGTH / length, "method_key": key,
                     "model": SEQ_MODEL, "status": "ok"} for length in EVAL_LENGTHS])
                if method == "trapezoid":
                    results.append_measurements(path, [
                        {"quantity": "lambda", "name": name, "unit": "1", "layer": layer, "direction": direction,
                         "method_key": key, "model": SEQ_MODEL,
                         "value": (0.5 + 0.1 * layer + 0.01 * seed + (0.2 if direction == "backward" else 0.0))
                         if name == "mean" else 0.05 * (layer + 1)}
                        for layer in (0, 1) for direction in ("forward", "backward") for name in ("mean", "std")])
    results.consolidate(study)
    return study


@pytest.fixture(scope="module")
def transfer_view(transfer_study):
    return build_view(results.load_study(transfer_study))


@pytest.fixture(scope="module")
def transfer_report(transfer_study, tmp_path_factory):
    return build_report(transfer_study, tmp_path_factory.mktemp("reports"))


def test_one_varying_factor_is_shown_side_by_side(transfer_view):
    assert transfer_view.factors == ["config.model.kwargs.conv"]
    table = accuracy_table(transfer_view)
    shown = table.display.set_index("method")
    assert list(shown.index) == ["zoh/paper", "foh/paper", "trapezoid/paper"]  # one row per method
    assert "conv" not in shown.columns
    half = T_975[2] * 0.5 / math.sqrt(3)
    assert shown.loc["zoh/paper", "conv=causal: top-1 (%)"] == "81.00 ± 1.00 (n=3)"
    assert shown.loc["zoh/paper", "conv=none: top-1 (%)"] == "71.00 ± 1.00 (n=3)"
    for conv in CONV_BASE:  # the same seed differences under both conv values
        assert shown.loc["foh/paper", f"conv={conv}: Δ top-1 vs zoh/paper [95% CI]"] == \
            f"+2.50* [+{2.5 - half:.2f}, +{2.5 + half:.2f}] (paired t)"
        # The primary family holds 3 tests (foh ×2, trapezoid causal; trapezoid none has one seed):
        # Holm's adjusted p of foh is 3·p (t = 5√3, dof 2), its MDE at α/3.
        assert shown.loc["foh/paper", f"conv={conv}: p (raw → adjusted)"] == \
            f"{FOH_P:.3f} → {3 * FOH_P:.3f}"
        assert shown.loc["foh/paper", f"conv={conv}: MDE (points)"] == \
            f"{stats.minimum_detectable_effect(0.5, 3, alpha=0.05 / 3):.2f}"
    trap = shown.loc["trapezoid/paper"]
    assert trap["conv=causal: Δ top-1 vs zoh/paper [95% CI]"].startswith("−1.00 [")  # contains 0: no mark
    assert trap["conv=causal: MDE (points)"] == f"{stats.minimum_detectable_effect(1.0, 3, alpha=0.05 / 3):.2f}"
    assert trap["conv=none: top-1 (%)"] == "69.00 (n=1)"
    # One seed against zoh's three: unpaired, 69 − mean(70, 71, 72) = −2, and no interval.
    assert trap["conv=none: Δ top-1 vs zoh/paper [95% CI]"] == "−2.00 (n=1, no CI)"
    assert trap["conv=none: MDE (points)"] == "none (n<2)"
    assert "side by side" in table.caption
    data = table.data.set_index(["method_key", "conv"])
    assert data.loc[("foh/paper", "none"), "top1_delta_mde"] == \
        pytest.approx(stats.minimum_detectable_effect(0.5, 3, alpha=0.05 / 3))
    assert data.loc[("foh/paper", "none"), "top1_family_size"] == 3


def test_transfer_table_per_evaluation_length(transfer_view):
    from discbench.report.tables import transfer_table

    table = transfer_table(transfer_view)
    data = table.data.set_index(["method_key", "conv", "length"])
    assert data.loc[("zoh/paper", "causal", 256), "mean"] == pytest.approx(61.0)
    assert data.loc[("zoh/paper", "causal", 256), "train_length"] == TRAIN_LENGTH
    assert data.loc[("zoh/paper", "causal", 64), "delta_scale"] == pytest.approx(2.0)
    foh = data.loc[("foh/paper", "none", 64)]
    assert foh["delta"] == pytest.approx(2.5) and bool(foh["delta_excludes_zero"])
    # Away from the training length: the secondary transfer family, 6 tests (foh and trapezoid
    # causal at L′ = 64 and 256 under both conv values; trapezoid none has one seed), Holm.
    assert foh["family"] == "transfer: every method vs the baseline at the other evaluation lengths"
    assert not foh["family_primary"] and foh["family_size"] == 6
    assert foh["delta_p_adj"] == pytest.approx(6 * FOH_P) and not foh["delta_significant"]
    assert foh["delta_mde"] == pytest.approx(stats.minimum_detectable_effect(0.5, 3, alpha=0.05 / 6))
    shown = table.display.set_index(["method", "conv"])
    assert shown.loc[("zoh/paper", "none"), "L′=256: top-1 (%)"] == "51.00 ± 1.00 (n=3)"
    # At the training length: the accuracy table's comparison and verdict (primary family, 3 tests).
    assert shown.loc[("foh/paper", "causal"), "L′=128 (training): Δ vs zoh/paper [95% CI]"].startswith("+2.50*")
    assert shown.loc[("foh/paper", "causal"), "L′=64: Δ vs zoh/paper [95% CI]"].startswith("+2.50 [")
    assert shown.loc[("foh/paper", "causal"), "L′=64: p (raw → adjusted)"] == f"{FOH_P:.3f} → {6 * FOH_P:.3f}"
    training = data.loc[("foh/paper", "causal", 128)]
    assert training["family_primary"] and training["delta_p_adj"] == pytest.approx(3 * FOH_P)
    assert "(secondary; 6 tests, Holm (family-wise error rate))" in table.caption
    assert shown.loc[("trapezoid/paper", "none"), "L′=64: MDE"] == "none (n<2)"
    assert "training length L = 128" in table.caption


def test_lambda_table_per_layer_and_direction(transfer_view):
    from discbench.report.tables import lambda_table

    table = lambda_table(transfer_view)
    data = table.data.set_index(["method_key", "conv", "direction", "layer"])
    layer1 = data.loc[("trapezoid/paper", "causal", "forward", 1)]
    assert layer1["mean"] == pytest.approx(0.61) and layer1["std"] == pytest.approx(0.01) and layer1["n"] == 3
    assert layer1["spread"] == pytest.approx(0.10)
    assert data.loc[("trapezoid/paper", "none", "backward", 0), "mean"] == pytest.approx(0.7)
    assert set(data.index.get_level_values("method_key")) == {"trapezoid/paper"}
    shown = table.display
    first = shown.iloc[0]
    assert (first["direction"], first["layer"]) == ("forward", "0")  # forward before backward, layers in order
    row = shown[(shown["conv"] == "causal") & (shown["direction"] == "forward") & (shown["layer"] == "1")].iloc[0]
    assert row["λ: mean ± sd over seeds"] == "0.610 ± 0.010 (n=3)" and row["within-layer sd of λ"] == "0.100"


def test_transfer_report_files_and_findings(transfer_report):
    out = transfer_report.out_dir
    for name in ("accuracy", "transfer", "lambda"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    assert "L′=128 (training)" in (out / "transfer.md").read_text()
    for name in ("accuracy", "transfer", "lambda"):
        assert (out / f"{name}.tex").read_text().isascii(), f"{name}.tex: every symbol escaped for LaTeX"
    assert r"$\pm$" in (out / "lambda.tex").read_text()
    for stem in ("fig_accuracy", "fig_transfer", "fig_lambda"):
        with Image.open(out / f"{stem}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 200
        assert ET.parse(out / f"{stem}.svg").getroot().tag.endswith("svg")
    page = (out / "report.html").read_text()
    assert 'id="transfer"' in page and 'id="lambda"' in page
    assert "The values of conv side by side in each method's row" in (out / "index.md").read_text()
    findings = transfer_report.findings
    assert findings[0].startswith("Untuned: every method ran at one shared recipe")
    assert findings[1].startswith("Families and corrections: “every method vs zoh/paper at the training length” "
                                  "(primary; 3 tests, Holm (family-wise error rate)); “transfer: every method")
    causal = next(f for f in findings if f.startswith(f"{SEQ_MODEL}, conv=causal:"))
    assert ("1 of 2 methods differs from zoh/paper in top-1 after Holm (family-wise error rate) within family "
            "“every method vs zoh/paper at the training length”") in causal
    assert f"foh/paper +2.50 [+1.26, +3.74], adjusted p {3 * FOH_P:.3f}" in causal
    trap_mde = stats.minimum_detectable_effect(1.0, 3, alpha=0.05 / 3)
    assert f"a true difference of {trap_mde:.2f} points (trapezoid/paper) would be detected with 80% power" in causal
    assert "not a bound on any difference" in causal and "equivalent" not in causal  # no margin declared
    none = next(f for f in findings if f.startswith(f"{SEQ_MODEL}, conv=none:"))
    assert "trapezoid/paper: fewer than 2 seeds on a side, no interval, test or MDE" in none
    away = next(f for f in findings if f.startswith(f"{SEQ_MODEL}, conv=causal, evaluated at L′=64:"))
    assert "no top-1 difference to zoh/paper survives" in away and "foh/paper: the raw interval excludes 0" in away
    assert any(f.startswith(f"{SEQ_MODEL}, conv=none, evaluated at L′=256:") for f in findings)
    assert not any("evaluated at L′=128" in f for f in findings)  # the training length: stated above
    assert r"+2.50\*" in (out / "accuracy.md").read_text()  # the mark is literal in Markdown


def test_no_transfer_or_lambda_without_their_rows(digits_report, digits_view):
    from discbench.report.tables import lambda_table, transfer_table

    assert transfer_table(digits_view) is None and lambda_table(digits_view) is None
    assert not (digits_report.out_dir / "fig_transfer.png").exists()
    assert not (digits_report.out_dir / "fig_lambda.png").exists()


# ----------------------------------------------------------------------------- registry-driven styles


def test_method_styles_stay_apart_for_any_number_of_methods(monkeypatch):
    import dataclasses

    from discbench import methods
    from discbench.report.figures import method_style

    template = methods.METHODS["zoh/paper"]
    for i in range(30):
        for variant in ("canonical", "paper"):
            monkeypatch.setitem(methods.METHODS, f"extra{i}/{variant}",
                                dataclasses.replace(template, name=f"extra{i}", variant=variant))
    keys = list(methods.METHODS)
    looks = {k: method_style(k) for k in keys}
    signature = {k: (tuple(v["color"]), v["marker"], str(v["linestyle"]), str(v["markerfacecolor"]))
                 for k, v in looks.items()}
    assert len(set(signature.values())) == len(keys)
    assert len({tuple(v["color"]) for v in looks.values()}) == len({k.split("/")[0] for k in keys})
    # A key outside the registry never takes a registered method's colour.
    registered = {tuple(v["color"]) for v in looks.values()}
    assert all(tuple(method_style(f"unregistered{i}/paper")["color"]) not in registered for i in range(12))


def test_an_unregistered_methods_style_does_not_depend_on_the_process():
    """Reports of one study drawn in two processes look alike: no Python hash() (salted per
    process) in the style of a key outside the registry."""
    import os
    import subprocess
    import sys

    from discbench.report.figures import method_style

    code = ("from discbench.report.figures import method_style; "
            "s = method_style('unregistered/paper'); print(repr((tuple(map(float, s['color'])), s['marker'], "
            "str(s['linestyle']), str(s['markerfacecolor']))))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = method_style("unregistered/paper")
    assert other.stdout.strip() == repr((tuple(map(float, here["color"])), here["marker"], str(here["linestyle"]),
                                         str(here["markerfacecolor"])))


def test_numerics_table_shows_why_no_order_was_fitted(tmp_path):
    study = tmp_path / "numerics_nofit"
    results.write_study_meta(study, "numerics_nofit", "")
    row = _row("numerics_nofit", "zoh", "paper", 0, "ok")
    path = results.trial_dir(study, row["trial_id"])
    results.write_trial(path, row)
    results.append_measurements(path, [
        {"quantity": "order", "name": "measured_order", "value": None, "method_key": "zoh/paper",
         "note": "need ≥ 2 errors above the rounding floor to fit an order, got 1"},
        {"quantity": "stability", "name": "bound", "value": -math.inf, "method_key": "zoh/paper"}])
    results.consolidate(study)
    table = numerics_table(build_view(results.load_study(study)))
    shown = table.display.set_index("method")
    assert shown.loc["zoh/paper", "measured order"].startswith("no fit (need ≥ 2 errors")
    assert "docs/METHODS.md" in table.caption and "../shared" not in table.caption


def test_training_length_from_the_transfer_rows_when_the_config_has_none(tmp_path):
    from discbench.report.aggregate import transfer_frame

    study = tmp_path / "transfer_bare"
    results.write_study_meta(study, "transfer_bare", "")
    row = _row("transfer_bare", "zoh", "paper", 0, "ok", model=SEQ_MODEL, top1=50.0)
    path = results.trial_dir(study, row["trial_id"])
    results.write_trial(path, row)
    results.append_measurements(path, [
        {"quantity": "transfer", "name": "top1", "value": 40.0 + length / 32, "unit": "%", "length": length,
         "delta_scale": 100 / length, "method_key": "zoh/paper", "model": SEQ_MODEL, "status": "ok"}
        for length in (50, 100, 200)])
    results.consolidate(study)
    frame = transfer_frame(build_view(results.load_study(study))).set_index("length")
    assert (frame["train_length"] == 100).all() and frame.loc[200, "mean"] == pytest.approx(46.25)
    assert frame.loc[200, "n"] == 1 and math.isnan(frame.loc[200, "std"])


def test_transfer_figure_shows_each_difference_to_the_baseline_below_the_accuracies(transfer_view, tmp_path,
                                                                                    monkeypatch):
    from discbench.report import figures
    from discbench.report.aggregate import transfer_frame

    kept = {}
    monkeypatch.setattr(figures.plt, "close", lambda fig: kept.setdefault("fig", fig))
    made = figures.transfer_figure(transfer_view, tmp_path)
    assert made is not None and "difference to zoh/paper" in made.caption
    axes = kept["fig"].axes
    panels = len(axes) // 2
    assert len(axes) == 2 * panels and panels == 2  # conv=causal and conv=none
    for ax in axes[:panels]:  # accuracy bands never leave 0-100 %
        for band in ax.collections:
            ys = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
            assert ys.min() >= 0 and ys.max() <= 100
    frame = transfer_frame(transfer_view)
    expected = frame[frame["delta"].notna() & (frame["model"] == SEQ_MODEL)]
    for ax, conv in zip(axes[panels:], ("causal", "none")):
        assert ax.get_ylabel() == "Δ top-1 vs zoh/paper (points)"
        plotted = sorted(round(float(y), 6) for line in ax.lines for y in line.get_ydata()
                         if line.get_linestyle() == "None" and line.get_marker() not in (None, "None", ""))
        want = expected[[c[1] == conv for c in expected["condition"]]]
        assert set(round(float(v), 6) for v in want["delta"]) <= set(plotted)


# ----------------------------------------------------------------------------- model families side by side

# top-1 per family, method and seed: foh − zoh = +3, +2, +4 on Mamba-1 blocks, −1, +1, −3 on SSD blocks.
FAMILY_TOP1 = {
    "vim_micro": {"zoh/paper": (70.0, 72.0, 74.0), "foh/canonical": (73.0, 74.0, 78.0)},
    "vssd_micro": {"zoh/paper": (60.0, 64.0, 62.0), "foh/canonical": (59.0, 65.0, 59.0)},
}


@pytest.fixture(scope="module")
def family_study(tmp_path_factory) -> Path:
    """A study whose grid varies model.name (two families) × 2 methods × 3 seeds."""
    study = tmp_path_factory.mktemp("results") / "families"
    results.write_study_meta(study, "families", "name: families\n")
    for model, by_key in FAMILY_TOP1.items():
        for key, values in by_key.items():
            method, variant = key.split("/")
            for seed, top1 in enumerate(values):
                row = _row("families", method, variant, seed, "ok", model=model, image_size=16, top1=top1,
                           top5=top1 + 20, train_images_per_s=TRAIN_IPS[key], peak_mem_mb=100.0)
                results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    results.consolidate(study)
    return study


def test_tuned_values_are_not_factors_even_when_they_vary_by_method_and_model_together(tmp_path):
    """Each arm (method × family) runs at its own tuned rate, so the rate is determined by neither
    the method nor the model alone; it is the protocol, not a design factor, and splitting the
    conditions by it would leave each method without a baseline to compare with."""
    study = tmp_path / "tuned_families"
    results.write_study_meta(study, "tuned_families", "name: tuned_families\ntune:\n  space:\n"
                             "    train.lr: {log_uniform: [0.001, 0.1]}\n")
    rates = {("vim_micro", "zoh/paper"): 0.01, ("vim_micro", "foh/canonical"): 0.02,
             ("vssd_micro", "zoh/paper"): 0.02, ("vssd_micro", "foh/canonical"): 0.01}
    for model, by_key in FAMILY_TOP1.items():
        for key, values in by_key.items():
            method, variant = key.split("/")
            for seed, top1 in enumerate(values):
                row = _row("tuned_families", method, variant, seed, "ok", model=model, image_size=16, top1=top1)
                row["config"]["train"]["lr"] = rates[(model, key)]
                results.write_trial(results.trial_dir(study, row["trial_id"]), row)
    results.consolidate(study)
    view = build_view(results.load_study(study))
    assert view.factors == [] and view.conditions == [("zoh/paper",), ("foh/canonical",)]
    data = accuracy_table(view).data.set_index(["model", "method_key"])
    assert data.loc[("vim_micro", "foh/canonical"), "top1_delta"] == pytest.approx(3.0)
    # without the tune section the same rates are a factor of the design
    results.write_study_meta(study, "tuned_families", "name: tuned_families\n")
    assert build_view(results.load_study(study)).factors == ["config.train.lr"]


def test_model_families_get_their_own_columns_with_intervals_and_mdes(family_study, tmp_path):
    view = build_view(results.load_study(family_study))
    assert view.models == ["vim_micro", "vssd_micro"] and view.factors == []
    table = accuracy_table(view)
    data = table.data.set_index(["model", "method_key"])
    half = T_975[2] / math.sqrt(3)
    vim, ssd = data.loc[("vim_micro", "foh/canonical")], data.loc[("vssd_micro", "foh/canonical")]
    assert vim.top1_delta == pytest.approx(3.0) and vim.top1_delta_how == "paired t"
    assert (vim.top1_delta_low, vim.top1_delta_high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert vim.top1_delta_mde == pytest.approx(stats.minimum_detectable_effect(1.0, 3, alpha=0.025))
    # SSD's differences to its own zoh/paper: −1, +1, −3 (mean −1, sd 2)
    assert ssd.top1_delta == pytest.approx(-1.0) and ssd.top1_delta_how == "paired t"
    assert (ssd.top1_delta_low, ssd.top1_delta_high) == (pytest.approx(-1 - 2 * half), pytest.approx(-1 + 2 * half))
    assert ssd.top1_delta_mde == pytest.approx(stats.minimum_detectable_effect(2.0, 3, alpha=0.025))
    shown = table.display.set_index("method")
    assert list(shown.index) == ["zoh/paper", "foh/canonical"]  # one row per method, a column group per family
    assert shown.loc["zoh/paper", "vim_micro: top-1 (%)"] == "72.00 ± 2.00 (n=3)"
    assert shown.loc["zoh/paper", "vssd_micro: top-1 (%)"] == "62.00 ± 2.00 (n=3)"
    # p = 0.035 raw, 0.070 after Holm over the two families' comparisons: no star.
    assert shown.loc["foh/canonical", "vim_micro: Δ top-1 vs zoh/paper [95% CI]"].startswith("+3.00 [")
    assert shown.loc["foh/canonical", "vssd_micro: Δ top-1 vs zoh/paper [95% CI]"] == \
        f"−1.00 [−{1 + 2 * half:.2f}, +{2 * half - 1:.2f}] (paired t)"
    assert shown.loc["foh/canonical", "vssd_micro: MDE (points)"] == f"{ssd.top1_delta_mde:.2f}"
    assert shown.loc["zoh/paper", "vssd_micro: Δ top-1 vs zoh/paper [95% CI]"] == "baseline"

    report = build_report(family_study, tmp_path)
    vim_finding = next(f for f in report.findings if f.startswith("vim_micro:"))
    ssd_finding = next(f for f in report.findings if f.startswith("vssd_micro:"))
    assert vim_finding.startswith("vim_micro: no top-1 difference to zoh/paper survives Holm")
    assert "foh/canonical: the raw interval excludes 0 but not after the correction" in vim_finding
    assert ssd_finding.startswith("vssd_micro: no top-1 difference to zoh/paper survives Holm")
    assert f"a true difference of {ssd.top1_delta_mde:.2f} points (foh/canonical)" in ssd_finding
    with Image.open(report.out_dir / "fig_accuracy.png") as image:  # one panel per family
        assert image.size[0] > 2 * 300


def test_cpu_studies_report_the_memory_above_the_idle_process():
    """On the CPU the process's own RSS (~0.9 GiB of Python and torch) would swamp a model's
    memory, so a study with peak_mem_delta_mb rows reports those; a GPU study its peak."""
    from discbench.config import TrialConfig
    from discbench.report.aggregate import memory_metric
    from discbench.kinds._inference import _rows

    cfg = TrialConfig.model_validate({"model": {"name": "vim_micro"}})
    measured = {"status": "ok", "images_per_s": 10.0, "peak_mem_mb": 900.0, "peak_mem_delta_mb": 12.5}
    cpu_rows = pd.DataFrame(_rows(cfg, measured, 4, 32, "cpu"))
    cuda_rows = pd.DataFrame(_rows(cfg, measured, 4, 32, "cuda"))
    assert cpu_rows.set_index("name").loc["peak_mem_delta_mb", "value"] == 12.5
    assert memory_metric(cpu_rows) == "peak_mem_delta_mb"
    assert "peak_mem_delta_mb" not in set(cuda_rows["name"]) and memory_metric(cuda_rows) == "peak_mem_mb"
