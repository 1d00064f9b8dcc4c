"""Convergence: the rule of a study's `analysis.convergence`, per trial, in the report's first finding,
its table and the training-curve figure."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from discbench import results
from discbench.analysis import AnalysisError, from_study_source
from discbench.report import build_report
from discbench.report.convergence import convergence_frame, convergence_sentence
from discbench.report.study_view import build_view
from discbench.report.tables import convergence_table

# per trial: (method, variant, seed, status, epochs as (train_loss, top1) per epoch)
FLAT = [(1.0, 80.0)] * 4
TRIALS = [
    ("zoh", "paper", 0, "ok", FLAT),                                              # converged
    ("zoh", "paper", 1, "ok", [(1.0, 70.0), (1.0, 75.0), (1.0, 78.0), (1.0, 80.0)]),  # top-1 still rising
    ("foh", "canonical", 0, "ok", [(2.0, 80.0), (1.5, 80.0), (1.2, 80.0), (1.0, 80.0)]),  # loss still falling
    ("foh", "canonical", 1, "ok", [(1.0, 80.0)]),                                # one epoch: not judged
    ("rk4", "canonical", 0, "diverged", [(1.0, 80.0)]),                          # counted as diverged instead
    ("bilinear", "canonical", 0, "ok", [(0.5, 90.0), (0.04, 90.0), (0.008, 90.0), (0.004, 90.0)]),  # fitted
    ("bilinear", "canonical", 1, "ok", [(0.5, 90.0), (0.5, 90.0), (0.5, 90.0), (0.9, 85.0)]),  # a late jump
]


def _study(root: Path, source: str = "name: conv\n", trials=TRIALS) -> Path:
    study = root / "conv"
    results.write_study_meta(study, "conv", source)
    for method, variant, seed, status, epochs in trials:
        trial_id = f"{method}-{variant}-s{seed}"
        row = {"study": "conv", "trial_id": trial_id, "method": method, "variant": variant,
               "method_key": f"{method}/{variant}", "seed": seed, "model": "seqmamba_micro", "dataset": "mnist1d",
               "status": status, "top1": epochs[-1][1] if status == "ok" else None, "num_classes": 10,
               "epochs_done": len(epochs), "config": {"method": method, "variant": variant, "seed": seed},
               "device": "cpu:test", "git_commit": "0123456789ab"}
        path = results.trial_dir(study, trial_id)
        results.write_trial(path, row)
        for epoch, (loss, top1) in enumerate(epochs, start=1):
            results.append_epoch(path, {"epoch": epoch, "train_loss": loss, "val_loss": loss, "top1": top1})
    results.consolidate(study)
    return study


def test_each_finished_trial_is_judged_by_the_window_rule(tmp_path):
    view = build_view(results.load_study(_study(tmp_path)))
    frame = convergence_frame(view).set_index("trial_id")
    assert set(frame.index) == {"zoh-paper-s0", "zoh-paper-s1", "foh-canonical-s0", "foh-canonical-s1",
                                "bilinear-canonical-s0", "bilinear-canonical-s1"}
    # a training set fitted (loss below the floor) counts as settled though its tiny loss still halves
    assert frame.loc["bilinear-canonical-s0", "converged"] is True
    assert frame.loc["bilinear-canonical-s0", "final_loss"] == pytest.approx(0.004)
    # a loss that jumps up and a top-1 that falls are changes too
    assert frame.loc["bilinear-canonical-s1", "converged"] is False
    assert frame.loc["bilinear-canonical-s1", "top1_rise"] == pytest.approx(-5.0)
    # E = 4 epochs, w = max(2, ceil(0.25 · 4)) = 2: halves of one epoch, epoch 3 against epoch 4
    assert frame.loc["zoh-paper-s0", "converged"] is True and frame.loc["zoh-paper-s0", "window"] == 2
    assert frame.loc["zoh-paper-s1", "top1_rise"] == pytest.approx(2.0)
    assert frame.loc["zoh-paper-s1", "converged"] is False
    assert frame.loc["foh-canonical-s0", "loss_drop"] == pytest.approx((1.2 - 1.0) / 1.2)
    assert frame.loc["foh-canonical-s0", "converged"] is False
    assert frame.loc["foh-canonical-s1", "converged"] is None and math.isnan(frame.loc["foh-canonical-s1", "top1_rise"])
    sentence = convergence_sentence(view)
    assert sentence.startswith("Not converged: 3 of 6 finished trials did not converge by the study's rule (over "
                               "the last 25% of its E epochs")
    assert "1 could not be judged (fewer epochs than the window" in sentence
    assert "(per method: zoh/paper 1, foh/canonical 1, bilinear/canonical 1)." in sentence


def test_the_study_declares_the_rule_and_a_bad_rule_is_refused(tmp_path):
    lenient = "name: conv\nanalysis:\n  convergence: {window: 1.0, top1_tolerance: 10, loss_tolerance: 0.9}\n"
    view = build_view(results.load_study(_study(tmp_path, lenient)))
    frame = convergence_frame(view).set_index("trial_id")
    # w = 4: the mean of epochs 3-4 against that of epochs 1-2, (78 + 80)/2 − (70 + 75)/2
    assert frame.loc["zoh-paper-s1", "window"] == 4 and frame.loc["zoh-paper-s1", "top1_rise"] == pytest.approx(6.5)
    assert frame["converged"].dropna().all()
    assert convergence_sentence(view).startswith(  # the one-epoch trial stays unjudged
        "Convergence: 5 of 6 finished trials converged by the study's rule (over the last 100% of its E epochs")
    for bad in ("window: 0", "window: 1.5", "top1_tolerance: -1", "loss_tolerance: 0", "loss_floor: -1", "patience: 3"):
        with pytest.raises(AnalysisError, match="analysis.convergence"):
            from_study_source(f"analysis:\n  convergence: {{{bad}}}\n")


def test_every_trial_converged_is_said_so(tmp_path):
    view = build_view(results.load_study(_study(tmp_path, trials=[("zoh", "paper", s, "ok", FLAT) for s in (0, 1)])))
    assert convergence_sentence(view).startswith("Every finished trial converged (2 of 2; the rule: over the last 25%")


def test_the_report_opens_with_convergence_and_tabulates_it(tmp_path):
    study = _study(tmp_path)
    report = build_report(study, tmp_path / "reports")
    assert report.findings[0].startswith("Not converged: 3 of 6")
    table = convergence_table(build_view(results.load_study(study)))
    rows = table.display.set_index("method")
    assert rows.loc["zoh/paper", "converged"] == "1 of 2" and rows.loc["foh/canonical", "converged"] == "0 of 2"
    assert rows.loc["zoh/paper", "top-1 rise over the window (points)"] == "+1.00 [0.00, 2.00]"
    assert rows.loc["bilinear/canonical", "converged"] == "1 of 2"
    assert len(table.data) == 6 and "rk4/canonical" not in set(rows.index)
    assert (report.out_dir / "convergence.csv").exists()
    assert "did not converge" in (report.out_dir / "index.md").read_text()


def test_one_noisy_epoch_decides_nothing(tmp_path):
    """Half-window means (w = 4 of 8 epochs: epochs 7-8 against 5-6): a plateau with one noisy
    evaluation in it passes, and a rise within the window fails however flat its last two epochs."""
    plateau = [(1.0, 60.0)] * 4 + [(1.0, 94.0), (1.0, 96.0), (1.0, 95.0), (1.0, 95.0)]
    rising = [(1.0, 60.0)] * 4 + [(1.0, 91.0), (1.0, 92.0), (1.0, 95.0), (1.0, 95.0)]
    view = build_view(results.load_study(_study(tmp_path, "name: conv\nanalysis:\n  convergence: {window: 0.5}\n",
                                                trials=[("zoh", "paper", 0, "ok", plateau),
                                                        ("zoh", "paper", 1, "ok", rising)])))
    frame = convergence_frame(view).set_index("trial_id")
    assert frame.loc["zoh-paper-s0", "top1_rise"] == pytest.approx(0.0)  # (95 + 95)/2 − (94 + 96)/2
    assert bool(frame.loc["zoh-paper-s0", "converged"])
    assert frame.loc["zoh-paper-s1", "top1_rise"] == pytest.approx(3.5)  # (95 + 95)/2 − (91 + 92)/2
    assert frame.loc["zoh-paper-s1", "converged"] == False  # noqa: E712 (a numpy bool)


def test_separation_on_validation_pairs_the_last_epochs_by_seed_and_counts_intervals_that_exclude_zero(tmp_path):
    from discbench.report.validation import separation_frame, separation_sentence

    def last(top1):  # three epochs, the last one's validation top-1 given
        return [(1.0, 50.0), (1.0, 60.0), (1.0, top1)]

    trials = [("zoh", "paper", s, "ok", last(v)) for s, v in enumerate((80.0, 82.0, 84.0))]
    trials += [("foh", "canonical", s, "ok", last(v)) for s, v in enumerate((90.0, 93.0, 94.0))]  # +10, +11, +10
    trials += [("rk4", "canonical", s, "ok", last(v)) for s, v in enumerate((70.0, 90.0, 80.0))]  # −10, +8, −4
    trials += [("bilinear", "canonical", 0, "ok", last(99.0))]  # one seed: no interval
    view = build_view(results.load_study(_study(tmp_path, trials=trials)))
    frame = separation_frame(view).set_index("method_key")
    assert set(frame.index) == {"foh/canonical", "rk4/canonical"}
    assert frame.loc["foh/canonical", "delta"] == pytest.approx(31 / 3)
    assert frame.loc["foh/canonical", "separated"] and not frame.loc["rk4/canonical", "separated"]
    assert frame.loc["rk4/canonical", "low"] < 0 < frame.loc["rk4/canonical", "high"]
    sentence = separation_sentence(view)
    assert "1 of 2 differences to zoh/paper have a paired 95% interval (seeds) that excludes 0" in sentence
    assert "largest +10.33 (foh/canonical)" in sentence
