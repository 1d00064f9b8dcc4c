"""The one writer and reader of results/<study>/.

While a study runs, each trial writes only inside its own folder (so parallel trials never
race): `trials/<trial_id>/trial.json` (the row, rewritten atomically when it changes),
`epochs.jsonl` (one line per epoch, appended and flushed), `measurements.jsonl` and
`correct.parquet` (per-example correctness, `write_correctness`).
`consolidate()` gathers them into the schema-versioned tables that reports read:

    results/<study>/study.json            name, schema version, the study file, provenance
    results/<study>/trials.parquet        one row per trial (TRIAL_COLUMNS + config.* columns)
    results/<study>/epochs.parquet        one row per trial and epoch (EPOCH_COLUMNS)
    results/<study>/measurements.parquet  long form: one measured value per row; its columns are
                                          kinds.measurement_columns(): the quantity, name, value,
                                          unit, status, note and each quantity's context columns

Schema version 2: the measurements' `kind` column is `quantity` (what was measured; "kind" is
a trial's kind), and a sequence model's inference throughput is infer_sequences_per_s.
    results/<study>/correctness.parquet   one row per trial and evaluation (CORRECTNESS_COLUMNS)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .kinds import measurement_columns, quantities

SCHEMA_VERSION = 3  # 3: three splits (epochs read val, a trial's top-1 and correctness test)
STUDY_FILE = "study.json"
TRIALS_TABLE = "trials.parquet"
EPOCHS_TABLE = "epochs.parquet"
MEASUREMENTS_TABLE = "measurements.parquet"
CORRECTNESS_TABLE = "correctness.parquet"
CORRECTNESS_FILE = "correct.parquet"  # in a trial's folder
TRIALS_DIR = "trials"

# Trial status values: ok (finished), diverged (non-finite loss: a result, not an error),
# failed (an exception after all retries), running (started, not finished).
STATUSES = ("ok", "diverged", "failed", "running")

TRIAL_COLUMNS = [
    "study", "trial_id", "method", "variant", "method_key", "seed", "model", "dataset",
    "image_size", "status", "top1", "top5", "train_loss", "epochs_done", "train_time_s",
    "train_images_per_s", "infer_images_per_s", "infer_sequences_per_s", "peak_mem_mb", "params", "diverged_at",
    "error", "traceback", "started_at", "finished_at", "config",
    "discbench_version", "git_commit", "torch_version", "device", "host", "schema_version",
]
EPOCH_COLUMNS = [
    "trial_id", "epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_s",
    "epoch_time_s", "peak_mem_mb",
]
# An epoch's val_loss, top1 and top5 are on the val split; a trial's top1 and top5 on the test split.
# Per-example top-1 correctness of a trained model: evaluation "test" (the test split at the
# trained setting; length = its tokens, null for images) or "transfer" (the test signals at
# length L′); n examples in the test split's order, packed 8 to a byte (numpy.packbits).
CORRECTNESS_COLUMNS = ["trial_id", "evaluation", "length", "n", "bits"]

class ResultsError(RuntimeError):
    """A results folder that is missing, empty, foreign or of another schema version."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# What a result depends on in a checkout: "-dirty" marks a commit whose code differs from the
# checkout's, not one whose reports/ or docs were rewritten meanwhile (a study's report, written
# while the next study runs, would otherwise mark that study's every trial).
CODE_PATHS = ("discbench", "csrc", "pyproject.toml", "setup.py")


def _git_commit(here: Path | None = None) -> str:
    """HEAD's commit of the checkout holding `here` (default: this package), with "-dirty" when a
    tracked file under CODE_PATHS differs from it; "unknown" outside a git checkout."""
    here = here or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return "unknown"
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=top or here, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: str = "cpu") -> dict[str, str]:
    """What produced a result: versions, commit, device, host."""
    import torch

    from . import __version__

    if device.startswith("cuda") and torch.cuda.is_available():
        device_name = f"cuda:{torch.cuda.get_device_name()}"
    else:
        device_name = f"cpu:{platform.processor() or platform.machine()}:{os.cpu_count()} cores"
    return {
        "discbench_version": __version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "device": device_name,
        "host": socket.gethostname(),
    }


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def trial_dir(study_path: Path, trial_id: str) -> Path:
    path = Path(study_path) / TRIALS_DIR / trial_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_study_meta(study_path: Path, name: str, study_source: str, extra: dict | None = None) -> None:
    """study.json: written when a study starts; keeps the study file's text for provenance."""
    Path(study_path).mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "schema_version": SCHEMA_VERSION, "created": now(),
            "study_source": study_source, **provenance(), **(extra or {})}
    atomic_write_text(Path(study_path) / STUDY_FILE, json.dumps(meta, indent=2))


def write_trial(trial_path: Path, row: dict[str, Any]) -> None:
    """(Re)write a trial's row; unknown keys are kept, missing TRIAL_COLUMNS become null."""
    row = dict(row)
    row.setdefault("schema_version", SCHEMA_VERSION)
    if isinstance(row.get("config"), dict):
        row["config"] = json.dumps(row["config"], sort_keys=True)
    atomic_write_text(Path(trial_path) / "trial.json", json.dumps(row, indent=2, default=str))


def read_trial(trial_path: Path) -> dict[str, Any] | None:
    path = Path(trial_path) / "trial.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_epoch(trial_path: Path, row: dict[str, Any]) -> None:
    _append_jsonl(Path(trial_path) / "epochs.jsonl", [row])


def reset_epochs(trial_path: Path, keep_through_epoch: int) -> None:
    """Drop epoch lines after `keep_through_epoch` (a resumed trial redoes those epochs)."""
    path = Path(trial_path) / "epochs.jsonl"
    if not path.exists():
        return
    kept = [line for line in _read_jsonl(path) if line.get("epoch", 0) <= keep_through_epoch]
    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in kept))


def append_measurements(trial_path: Path, rows: Iterable[dict[str, Any]],
                        allowed: Iterable[str] | None = None) -> None:
    """Append measurement rows; each row's quantity must be one of `allowed` (default: every
    quantity a registered trial kind declares, kinds.quantities())."""
    rows = list(rows)
    allowed = list(quantities() if allowed is None else allowed)
    unknown = sorted({str(r.get("quantity")) for r in rows} - set(allowed))
    if unknown:
        raise ValueError(f"measured quantity {', '.join(unknown)} not among {', '.join(allowed)}; a trial "
                         f"kind declares the quantities it measures (TrialKind.quantities)")
    _append_jsonl(Path(trial_path) / "measurements.jsonl", rows)


@dataclass
class TrialRecorder:
    """A running trial's rows, written to its folder (kinds.Recorder): epochs, and measurements
    of the quantities its kind declares (`quantities`) only."""

    folder: Path
    quantities: tuple[str, ...]

    def reset_epochs(self, keep_through_epoch: int) -> None:
        reset_epochs(self.folder, keep_through_epoch)

    def append_epoch(self, record: dict[str, Any]) -> None:
        append_epoch(self.folder, record)

    def reset_measurements(self) -> None:
        reset_measurements(self.folder)

    def append_measurements(self, rows: Iterable[dict[str, Any]]) -> None:
        append_measurements(self.folder, rows, self.quantities)

    def write_correctness(self, evaluations: Iterable[dict[str, Any]]) -> None:
        write_correctness(self.folder, evaluations)


def write_correctness(trial_path: Path, evaluations: Iterable[dict[str, Any]]) -> None:
    """A trial's per-example correctness: one row per {evaluation, length, correct ((N,) bool)}
    (see CORRECTNESS_COLUMNS), written atomically; nothing when there are none."""
    rows = [{"evaluation": e["evaluation"], "length": e.get("length"), "n": int(len(e["correct"])),
             "bits": np.packbits(np.asarray(e["correct"], dtype=bool)).tobytes()} for e in evaluations]
    if rows:
        frame = pd.DataFrame(rows).astype({"length": "Int64"})
        _atomic_write_parquet(Path(trial_path) / CORRECTNESS_FILE, frame)


def unpack_correctness(row: Any) -> np.ndarray:
    """The (n,) bool correctness of one CORRECTNESS_COLUMNS row."""
    return np.unpackbits(np.frombuffer(row["bits"], dtype=np.uint8), count=int(row["n"])).astype(bool)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash; the epoch is re-run on resume
    return rows


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = None
    extra = [c for c in frame.columns if c not in columns]
    return frame[columns + extra]


@dataclass
class StudyResults:
    """A study's results as tables; `meta` is study.json."""

    name: str
    path: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    measurements: pd.DataFrame
    correctness: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CORRECTNESS_COLUMNS))


def consolidate(study_path: Path) -> StudyResults:
    """Gather every trial folder into the Parquet tables (atomically) and return them."""
    study_path = Path(study_path)
    meta = _read_meta(study_path)
    trial_rows, epoch_rows, measurement_rows, correctness = [], [], [], []
    root = study_path / TRIALS_DIR
    for path in sorted(root.iterdir()) if root.exists() else []:
        row = read_trial(path)
        if row is None:
            continue
        config = json.loads(row["config"]) if row.get("config") else {}
        flat: dict[str, Any] = {}
        _flatten("config", config, flat)
        trial_rows.append({**row, **flat})
        epoch_rows += [{"trial_id": row["trial_id"], **e} for e in _read_jsonl(path / "epochs.jsonl")]
        measurement_rows += [{"trial_id": row["trial_id"], **m}
                             for m in _read_jsonl(path / "measurements.jsonl")]
        if (path / CORRECTNESS_FILE).exists():
            correctness.append(pd.read_parquet(path / CORRECTNESS_FILE).assign(trial_id=row["trial_id"]))
    trials = _frame(trial_rows, TRIAL_COLUMNS)
    epochs = _frame(epoch_rows, EPOCH_COLUMNS)
    measurements = _frame(measurement_rows, measurement_columns())
    _atomic_write_parquet(study_path / TRIALS_TABLE, trials)
    _atomic_write_parquet(study_path / EPOCHS_TABLE, epochs)
    _atomic_write_parquet(study_path / MEASUREMENTS_TABLE, measurements)
    correct = (pd.concat(correctness, ignore_index=True)[CORRECTNESS_COLUMNS] if correctness
               else pd.DataFrame(columns=CORRECTNESS_COLUMNS))
    if correctness:
        _atomic_write_parquet(study_path / CORRECTNESS_TABLE, correct)
    elif (study_path / CORRECTNESS_TABLE).exists():
        (study_path / CORRECTNESS_TABLE).unlink()
    return StudyResults(meta.get("name", study_path.name), study_path, meta, trials, epochs, measurements, correct)


def _read_meta(study_path: Path) -> dict[str, Any]:
    meta_path = Path(study_path) / STUDY_FILE
    if not meta_path.exists():
        raise ResultsError(f"{study_path} is not a discbench results folder: no {STUDY_FILE} "
                           f"(results are written by `discbench run`)")
    meta = json.loads(meta_path.read_text())
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{meta_path} has results schema version {version}; this discbench "
                           f"reads version {SCHEMA_VERSION}")
    return meta


def load_study(study_path: Path) -> StudyResults:
    """Read a study's consolidated tables."""
    study_path = Path(study_path)
    meta = _read_meta(study_path)
    if not (study_path / TRIALS_TABLE).exists():
        raise ResultsError(f"{study_path} has no {TRIALS_TABLE}: the study has not finished a trial yet")
    tables = [pd.read_parquet(study_path / t) for t in (TRIALS_TABLE, EPOCHS_TABLE, MEASUREMENTS_TABLE)]
    correct = (pd.read_parquet(study_path / CORRECTNESS_TABLE) if (study_path / CORRECTNESS_TABLE).exists()
               else pd.DataFrame(columns=CORRECTNESS_COLUMNS))
    return StudyResults(meta.get("name", study_path.name), study_path, meta, *tables, correct)


def list_studies(results_root: Path) -> list[Path]:
    """Study folders (those with a study.json) under results_root, sorted by name."""
    root = Path(results_root)
    if not root.is_dir():
        raise ResultsError(f"results folder {root} does not exist; run a study first "
                           f"(`discbench run studies/digits.yaml`)")
    return sorted(p for p in root.iterdir() if (p / STUDY_FILE).exists())


def reset_measurements(trial_path: Path) -> None:
    """Drop a trial's measurements (a resumed trial measures again from the start)."""
    path = Path(trial_path) / "measurements.jsonl"
    if path.exists():
        path.unlink()
