"""`discbench run`: Ray Tune scheduling, Parquet results, resume, failures, locking, SIGKILL
reliability, an existing Ray cluster (--address), and imagenet_tiny.yaml end to end.

One local Ray instance serves the in-process runs of this module; the CLI subprocess tests
start their own (as a user's `discbench run` does)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from discbench import results
from discbench.cli import main
from discbench.runner import StudyLock

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = ["discbench_version", "git_commit", "torch_version", "device", "host"]

MICRO = """
name: {name}
description: two tiny trials for the runner tests
methods: [zoh, foh/paper]
data: {{dataset: digits, image_size: 8, train_limit: 64, test_limit: 32, batch_size: 16}}
model: {{name: vim_micro, patch_size: 4}}
train: {{preset: digits, epochs: {epochs}, device: cpu}}
measure: {{throughput: true, batch_sizes: [8], resolutions: [8, 16], repeats: 1, warmup: 1}}
max_concurrent: {concurrent}
retries: {retries}
"""


def micro_study(folder: Path, name: str = "micro", epochs: int = 1, concurrent: int = 2, retries: int = 0,
                extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(MICRO.format(name=name, epochs=epochs, concurrent=concurrent, retries=retries) + extra)
    return path


def progress_events(output: str) -> list[tuple[str, str]]:
    """(event, trial_id) of every progress line `[HH:MM:SS] EVENT TRIAL_ID[: …| …]` in a run's
    output (discbench.runner.Progress), by fields rather than by column alignment."""
    events = []
    for line in output.splitlines():
        stamp, _, rest = line.partition("] ")
        fields = rest.split()
        if stamp.startswith("[") and len(stamp) == 9 and len(fields) >= 2:
            events.append((fields[0], fields[1].rstrip(":")))
    return events


@pytest.fixture(scope="module")
def finished_micro(tmp_path_factory, local_ray):
    """The micro study run once to the end (in this process, on the shared Ray)."""
    folder = tmp_path_factory.mktemp("micro")
    study = micro_study(folder)
    code = main(["run", str(study), "--results-dir", str(folder / "results")])
    return folder, study, code


@pytest.mark.slow
def test_a_run_writes_one_parquet_row_per_trial_with_config_metrics_and_provenance(finished_micro):
    folder, _, code = finished_micro
    assert code == 0
    loaded = results.load_study(folder / "results" / "micro")
    trials = loaded.trials.set_index("trial_id")
    assert sorted(trials.index) == ["foh-paper", "zoh-canonical"]
    assert (trials["status"] == "ok").all() and trials["top1"].between(0, 100).all()
    assert trials.loc["foh-paper", "method_key"] == "foh/paper"
    assert trials[PROVENANCE].notna().all().all() and (trials["schema_version"] == results.SCHEMA_VERSION).all()
    assert (trials["config.train.epochs"] == 1).all() and (trials["config.train.opt"] == "adamw").all()
    assert json.loads(trials.loc["zoh-canonical", "config"])["data"]["dataset"] == "digits"
    assert trials["started_at"].notna().all() and trials["finished_at"].notna().all()
    assert sorted(zip(loaded.epochs["trial_id"], loaded.epochs["epoch"])) == [("foh-paper", 1), ("zoh-canonical", 1)]
    m = loaded.measurements
    # one row of each per (batch, resolution); on the CPU also the peak RSS above the window's start
    for name in ("infer_images_per_s", "peak_mem_mb", "peak_mem_delta_mb"):
        measured = m[(m["name"] == name) & (m["trial_id"] == "zoh-canonical")]
        assert sorted(zip(measured["batch_size"], measured["resolution"])) == [(8, 8), (8, 16)], name
        assert (measured["value"] >= 0).all() and (measured["status"] == "ok").all(), name
        assert name == "peak_mem_delta_mb" or (measured["value"] > 0).all(), name
    first = m[(m["quantity"] == "throughput") & (m["trial_id"] == "zoh-canonical") & (m["batch_size"] == 8)
              & (m["resolution"] == trials.loc["zoh-canonical", "image_size"])]
    assert first["value"].tolist() == [trials.loc["zoh-canonical", "infer_images_per_s"]]
    assert loaded.meta["name"] == "micro" and "methods: [zoh, foh/paper]" in loaded.meta["study_source"]


@pytest.mark.slow
def test_running_again_skips_finished_trials(finished_micro, capsys):
    folder, study, _ = finished_micro
    trial_json = folder / "results" / "micro" / "trials" / "zoh-canonical" / "trial.json"
    before = trial_json.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", str(study), "--results-dir", str(folder / "results")]) == 0
    out = capsys.readouterr().out
    assert "2 already finished (not re-run)" in out and "every trial has finished" in out
    assert trial_json.stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_changed_configuration_is_refused_and_restart_says_what_it_deletes(finished_micro, capsys):
    folder, study, _ = finished_micro
    capsys.readouterr()
    assert main(["run", str(study), "--results-dir", str(folder / "results"), "-o", "train.epochs=2"]) == 1
    err = capsys.readouterr().err
    assert "run with another configuration" in err and "train.epochs: 1 → 2" in err and "--restart" in err
    # --restart without --yes (stdin is not a terminal here) deletes nothing
    assert main(["run", str(study), "--results-dir", str(folder / "results"), "--restart"]) == 1
    captured = capsys.readouterr()
    assert "--restart deletes" in captured.out and "2 trial folders" in captured.out
    assert "add --yes" in captured.err
    assert (folder / "results" / "micro" / "trials" / "zoh-canonical" / "trial.json").exists()


def test_a_second_run_on_the_same_results_folder_refuses(tmp_path, capsys):
    study = micro_study(tmp_path, name="locked")
    lock_path = tmp_path / "results" / "locked" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from discbench.runner import StudyLock; "
                               "StudyLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)",
                               str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", str(study), "--results-dir", str(tmp_path / "results")]) == 1
        err = capsys.readouterr().err
        assert f"is in use by discbench run (pid {holder.pid}, started" in err and "wait for it" in err
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock
    StudyLock(lock_path).acquire().release()


@pytest.mark.slow
def test_a_failing_trial_is_retried_and_recorded_while_the_other_finishes(tmp_path, local_ray, capsys):
    # 64 training images cannot fill one batch of 512: train.fit raises (a real error, every attempt)
    study = micro_study(tmp_path, name="failing", retries=1,
                        extra="trials:\n  - {method: rk4, id: too_big, data.batch_size: 512}\n")
    assert main(["run", str(study), "--results-dir", str(tmp_path / "results")]) == 1
    captured = capsys.readouterr()
    events = progress_events(captured.out)
    assert ("retrying", "too_big") in events and ("FAILED", "too_big") in events
    assert "run the same command again to retry them" in captured.err
    trials = results.load_study(tmp_path / "results" / "failing").trials.set_index("trial_id")
    failed = trials.loc["too_big"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert "fewer than data.batch_size 512" in failed["error"]
    assert failed["traceback"].startswith("Traceback") and "train.py" in failed["traceback"]
    assert (trials.drop(index="too_big")["status"] == "ok").all()


@pytest.mark.slow
def test_a_trial_with_two_data_parallel_workers_runs_under_tune(tmp_path, local_ray):
    study = micro_study(tmp_path, name="parallel", concurrent=1,
                        extra="resources: {cpus: 1, gpus: 0, workers: 2}\n")
    assert main(["run", str(study), "--results-dir", str(tmp_path / "results"), "-o", "methods=[zoh]"]) == 0
    trials = results.load_study(tmp_path / "results" / "parallel").trials
    assert list(trials["status"]) == ["ok"] and json.loads(trials["resources"][0])["workers"] == 2


def test_dry_run_prints_the_trials_and_a_measured_estimate(tmp_path, capsys, monkeypatch):
    from discbench import measure

    # the measured throughputs fixed, so that the estimate's arithmetic is what is checked:
    # 2 trials × 3 epochs × (64 training images / 100 per s + 32 val images / 400 per s) = 4.32 s
    monkeypatch.setattr(measure, "training_throughput", lambda *a, **k: {"status": "ok", "images_per_s": 100.0})
    monkeypatch.setattr(measure, "inference_throughput", lambda *a, **k: {"status": "ok", "images_per_s": 400.0})
    study = micro_study(tmp_path, name="dry", epochs=3)
    assert main(["run", str(study), "--results-dir", str(tmp_path / "results"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "zoh-canonical" in out and "foh-paper" in out and "pending" in out
    assert "measured: vim_micro zoh/canonical 8px: 100 train / 400 eval images/s (batch 16," in out
    assert "estimate: 0m04s of trial time" in out
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "discbench.cli", *args]


def _lines(path: Path) -> int:
    """Lines of a text file, 0 while it does not exist."""
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _kill_tree(process: subprocess.Popen, sig: int) -> list[psutil.Process]:
    """Send `sig` to the run only; return the processes it had started (Ray's), for cleanup."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(sig)
    process.wait(timeout=60)
    return children


def _reap(processes: list[psutil.Process]) -> None:
    """End processes a killed run had started that outlived it, by pid: Ray's dashboard and
    runtime-env agents lose their raylet, ignore SIGTERM and would stay forever."""
    for proc in processes:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)


def _status(study_path: Path, trial_id: str) -> str | None:
    row = results.read_trial(study_path / "trials" / trial_id)
    return row and row.get("status")


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_resumes_without_redoing_finished_trials(tmp_path, local_ray):
    study = micro_study(tmp_path, name="reliable", epochs=4, concurrent=1)
    out_dir = tmp_path / "results"
    study_path = out_dir / "reliable"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    run = subprocess.Popen(_cli("run", str(study), "--results-dir", str(out_dir), "--num-cpus", "2"),
                           stdout=log, stderr=subprocess.STDOUT, env=env)
    children = []
    try:
        # trials run one at a time in file order: wait for the first to finish and the second
        # to have written a checkpoint (at least one epoch done), then kill the runner
        _wait_for(lambda: _status(study_path, "zoh-canonical") == "ok", 240, "the first trial", run)
        _wait_for(lambda: (study_path / "trials" / "foh-paper" / "checkpoint.pt").exists(), 240,
                  "a checkpoint of the second trial", run)
        finished_first = (study_path / "trials" / "zoh-canonical" / "trial.json").read_text()
        children = _kill_tree(run, signal.SIGKILL)
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
        _reap(children)
    assert _status(study_path, "foh-paper") == "running"

    second = subprocess.run(_cli("run", str(study), "--results-dir", str(out_dir), "--num-cpus", "2"),
                            capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 already finished (not re-run)" in second.stdout
    assert "Token authentication is enabled" not in second.stdout + second.stderr  # a local instance's notice
    assert ("resumed", "foh-paper") in progress_events(second.stdout)
    # the finished trial was not touched; the killed one resumed from its checkpoint
    assert (study_path / "trials" / "zoh-canonical" / "trial.json").read_text() == finished_first
    resumed = results.read_trial(study_path / "trials" / "foh-paper")
    assert resumed["status"] == "ok" and resumed["resumed_from_epoch"] >= 1 and resumed["attempts"] == 2
    final = results.load_study(study_path)
    assert sorted(final.trials["trial_id"]) == ["foh-paper", "zoh-canonical"]
    assert (final.trials["status"] == "ok").all()
    # every epoch exactly once, and the same numbers as an uninterrupted run (the digits recipe
    # is deterministic and resumes bit-exactly)
    epochs = final.epochs.sort_values(["trial_id", "epoch"])
    assert list(epochs.groupby("trial_id")["epoch"].apply(list)) == [[1, 2, 3, 4]] * 2
    (tmp_path / "reference").mkdir()
    uninterrupted = micro_study(tmp_path / "reference", name="reliable", epochs=4, concurrent=1)
    reference_dir = tmp_path / "reference" / "results"
    assert main(["run", str(uninterrupted), "--results-dir", str(reference_dir)]) == 0
    reference = results.load_study(reference_dir / "reliable").epochs.sort_values(["trial_id", "epoch"])
    pd.testing.assert_series_equal(epochs["top1"].reset_index(drop=True), reference["top1"].reset_index(drop=True))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    # 60 epochs of a quarter second each: Ctrl-C lands well inside the first trial (with 20,
    # a whole trial took 5 s and a fresh-clone run once finished before the signal took effect)
    study = micro_study(tmp_path, name="interrupted", epochs=60, concurrent=1)
    out_dir = tmp_path / "results"
    run = subprocess.Popen(_cli("run", str(study), "--results-dir", str(out_dir), "--num-cpus", "2"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    children = []
    try:
        trial = out_dir / "interrupted" / "trials" / "zoh-canonical"
        _wait_for(lambda: (trial / "checkpoint.pt").exists() and _lines(trial / "epochs.jsonl") >= 2,
                  240, "a checkpoint after two epochs", run)
        children = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        _reap(children)
    assert run.returncode == 130, output
    assert "interrupted; run the same command again to resume" in output
    assert (out_dir / "interrupted" / "trials.parquet").exists()
    # no trial had finished: the same command restores Ray Tune's experiment and finishes it
    again = subprocess.run(_cli("run", str(study), "--results-dir", str(out_dir), "--num-cpus", "2"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restoring Ray Tune's experiment" in again.stdout
    assert ("resumed", "zoh-canonical") in progress_events(again.stdout)
    assert results.read_trial(out_dir / "interrupted" / "trials" / "zoh-canonical")["resumed_from_epoch"] >= 1
    final = results.load_study(out_dir / "interrupted")
    assert (final.trials["status"] == "ok").all() and len(final.epochs) == 2 * 60


# Ray's command line through this interpreter (its console script `ray` is only on PATH in an
# activated venv; `make test` does not activate one).
_RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_run_on_an_existing_ray_cluster_with_address(tmp_path):
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # --block keeps the head node's processes under this one process: stopping it stops them
    head = subprocess.Popen([*_RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        study = micro_study(tmp_path, name="cluster")
        address = f"127.0.0.1:{port}"
        _wait_for(lambda: subprocess.run([*_RAY, "status", f"--address={address}"], capture_output=True,
                                         env=env).returncode == 0, 90, "the Ray head node", head)
        run = subprocess.run(_cli("run", str(study), "--results-dir", str(tmp_path / "results"), "--address", address),
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        trials = results.load_study(tmp_path / "results" / "cluster").trials
        assert sorted(trials["status"]) == ["ok", "ok"]
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def _image_folder_tree(root: Path, classes: int = 2, train: int = 12, val: int = 4) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((20, 20, 3)) * 80 + 160 * c).clip(0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", format="JPEG")


TINY_OVERRIDES = ["-o", "train.epochs=1", "-o", "model.name=vim_micro", "-o", "model.patch_size=4",
                  "-o", "data.image_size=16", "-o", "data.batch_size=4", "-o", "data.workers=0",
                  "-o", "train.device=cpu", "-o", "measure.batch_sizes=[4]", "-o", "measure.repeats=1"]


def test_imagenet_tiny_without_imagenet_stops_with_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "no-imagenet"
    assert main(["run", str(ROOT / "studies" / "imagenet_tiny.yaml"), "--results-dir", str(tmp_path / "r"),
                 "--data-root", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "imagenet_tiny.yaml: dataset 'imagenet': data.root" in err and "does not exist" in err
    assert "image-net.org" in err


@pytest.mark.slow
def test_imagenet_tiny_runs_end_to_end_on_a_generated_image_folder(tmp_path, local_ray, capsys):
    _image_folder_tree(tmp_path / "imagenet")
    args = ["run", str(ROOT / "studies" / "imagenet_tiny.yaml"), "--results-dir", str(tmp_path / "results"),
            "--data-root", str(tmp_path / "imagenet"), *TINY_OVERRIDES]
    # as written the study asks for GPUs: refused up front on a machine without them
    assert main(args) == 1
    assert "asks for 8 GPU(s)" in capsys.readouterr().err
    assert main(args + ["-o", "resources={cpus: 1, gpus: 0, workers: 1}"]) == 0
    loaded = results.load_study(tmp_path / "results" / "imagenet_tiny")
    assert len(loaded.trials) == 9 and (loaded.trials["status"] == "ok").all()
    assert set(loaded.trials["method_key"]) == {"zoh/canonical", "foh/canonical", "bilinear/canonical",
                                                "polynomial/canonical", "highorder/canonical",
                                                "rk4/canonical", "trapezoid/canonical", "zoh/paper",
                                                "trapezoid/paper"}
    # the Vim-Ti recipe is what ran, with the overrides on top
    assert (loaded.trials["config.train.preset"] == "vim_tiny").all()
    assert (loaded.trials["config.train.model_ema"]).all() and (loaded.trials["config.train.epochs"] == 1).all()


def test_a_ctrl_c_swallowed_inside_the_loop_still_interrupts_the_run():
    """The run's SIGINT handler records Ctrl-C, so a KeyboardInterrupt that Tune's loop swallows
    is raised again when the loop ends (and at every step, by the progress callback)."""
    from discbench.runner import _CtrlC

    previous = signal.getsignal(signal.SIGINT)
    steps = []

    def fit():  # a loop that swallows the KeyboardInterrupt raised where the signal landed
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
        except KeyboardInterrupt:
            steps.append("swallowed")

    ctrl_c = _CtrlC()
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.run(fit)
    assert steps == ["swallowed"] and ctrl_c.requested
    assert signal.getsignal(signal.SIGINT) is previous
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.check()  # what the progress callback calls at every step of Tune's loop
    _CtrlC().run(lambda: None)  # no Ctrl-C: nothing raised


def test_the_time_left_counts_the_waiting_trials_before_any_has_finished(monkeypatch):
    """Before any trial finishes, a running trial that has done all its (one) epochs must not make
    the waiting ones look free: each waits as long as a whole trial at the running one's rate."""
    from discbench import runner

    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    progress = runner.Progress(total=5, epochs={f"t{i}": 1 for i in range(5)}, concurrency=1)
    progress.say = lambda text: None
    assert progress.time_left() is None  # nothing measured yet
    progress.started("t0")
    progress.resumed("t0", 0)
    clock[0] += 30.0
    progress.epoch("t0", 1)  # its only epoch, after 30 s; evaluation and saving still to come
    assert progress.time_left() == pytest.approx(4 * 30.0)
    progress.finished("t0", {"status": "ok", "top1": 50.0})
    assert progress.time_left() == pytest.approx(4 * 30.0)  # now from the finished trial's duration
