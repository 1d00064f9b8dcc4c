"""Study files: the YAML schema, its expansion into trials, `-o key=value` overrides and the
`discbench validate` command.

A study file (see studies/*.yaml):

    name: digits                     # results go to results/<name>/
    description: what it reproduces
    kind: train                      # a trial kind (discbench/kinds/): train | numerics | kernels | resolution
    methods: [zoh, foh, zoh/paper]   # "method" (canonical) or "method/variant", or "all"; in a
                                     # list, "all/canonical" or "all/paper" is every method in
                                     # that variant, so methods registered later join the study
    data: {dataset: digits, image_size: 16, batch_size: 64}     # TrialConfig.data
    model: {name: vim_micro, patch_size: 4, kwargs: {}}          # family+size as a timm name; kwargs override
    train: {preset: digits, epochs: 8}                           # preset + overrides (TrainConfig)
    measure: {throughput: true, batch_sizes: [64]}               # after training
    seed: 0
    grid: {seed: [0, 1], train.lr: [1e-3, 3e-3]}   # axes over any trial config key (dotted)
    trials: [{method: foh/paper, train.epochs: 2}] # explicit extra trials
    resources: {cpus: 1, gpus: 0, workers: 1}      # per trial; workers > 1: data parallel
    retries: 1                                     # re-runs of a trial that raised
    max_concurrent: 2
    numerics: {...} | kernels: {...}               # parameters of those kinds
    analysis: {families: [...], error_rate: fwer}  # the report's statistics (see analysis.py)
    references: [seqgru_micro, seqcnn_micro]       # models without a discretization, beside the methods
    tune: {space: {train.lr: {log_uniform: [1e-3, 3e-2]}}, samples: 8}  # the tuning stage (tuning.py)

The trials are methods × grid (the cartesian product, in file order), then references × grid
(the grid's axes over model.* left out: a reference is its own model; the method fields of its
trials are a placeholder it ignores; trial ids `ref-<model>…`), then the explicit trials. A grid
axis over a key whose values are mappings merges each mapping into the key
(`model.kwargs: [{cls_token: none, pool: max}, {cls_token: head}]`); a named axis that is not a
config key sets several keys together (`size: [{model.name: vim_small_patch16_224,
train.preset: vim_small}, …]`). Overrides of trial keys (`-o train.epochs=1`) win over all of
these. Trial ids are readable: the method key plus the axes that vary (`foh-canonical__seed=1`),
or an explicit trial's `id`.
Every trial is validated with `TrialConfig` once, here; errors name the file, the field path as
written in the study, the bad value and the allowed values.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from .analysis import AnalysisSpec
from .tuning import LOCK_SUFFIX, TuneSpec, TuningLock, lock_path, read_lock
from .config import TRIAL_SECTIONS, TrialConfig
from .data import DATASETS
from .methods import METHOD_NAMES, METHODS, VARIANTS, parse_method
from .kinds import DEFAULT_KIND, TRIAL_KINDS, TrialKind

TRIAL_ID_MAX = 96
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 (no dot) as a string; studies mean the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class StudyError(ValueError):
    """A study file that cannot run; `problems` lists every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one trial asks the Ray cluster for. workers > 1: that many data-parallel Ray Train
    workers, each with `cpus` CPUs and `gpus` GPUs."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    workers: int = Field(1, ge=1)


class Reference(_Strict):
    """A model without a discretization trained beside the study's methods: `references:` takes
    names (`seqgru_micro`) or mappings ({name: seqgru_micro, kwargs: {pool: mean}})."""

    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class _StudyFields(_Strict):
    """The study file's top level (trial sections stay mappings here; TrialConfig checks them).
    `kind` and the kinds' parameter sections come from kinds.TRIAL_KINDS (see _spec_model)."""

    name: str = Field(pattern=STUDY_NAME)
    description: str = Field(min_length=1)
    kind: str = DEFAULT_KIND
    methods: list[str] | Literal["all"] = Field(min_length=1)
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    measure: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    trials: list[dict[str, Any]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(1, ge=0)
    max_concurrent: int | None = Field(None, gt=0)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    tune: TuneSpec | None = None  # the tuning stage (discbench/tuning.py); its choices: the lock file
    references: list[Reference] = Field(default_factory=list)  # non-SSM models beside every method


@functools.lru_cache(maxsize=8)
def _spec_model(kinds: tuple[TrialKind, ...]) -> type[_StudyFields]:
    """StudySpec for these trial kinds: `kind` is one of their names, and each kind with
    parameters has an optional section of that name (`numerics: {...}`)."""
    names = tuple(k.name for k in kinds)
    sections = {k.name: (k.params | None, None) for k in kinds if k.params is not None}
    return create_model("StudySpec", __base__=_StudyFields, __doc__=_StudyFields.__doc__,
                        __module__=__name__, kind=(Literal[names], DEFAULT_KIND), **sections)  # type: ignore[valid-type]


def study_spec_model() -> type[_StudyFields]:
    """The StudySpec model of the kinds registered now (kinds.TRIAL_KINDS)."""
    return _spec_model(tuple(TRIAL_KINDS.values()))


StudySpec = study_spec_model()


@dataclass(frozen=True)
class Trial:
    """One trial: its id, what kind of work it is, its validated config and resources."""

    trial_id: str
    kind: str
    config: TrialConfig
    params: dict[str, Any]  # the kind's parameters (numerics/kernels), {} for train/resolution
    resources: Resources
    origin: str  # where in the study file it comes from, for messages
    arm_id: str  # the trial without its seed: what the tuning stage tunes (its trial id without seed=)
    reference: str | None = None  # a reference model's name (then method_key is a placeholder)

    @property
    def label(self) -> str:
        """What the trial compares: its method key, or a reference's model name."""
        return self.reference or self.method_key

    @property
    def method_key(self) -> str:
        return self.config.method_key

    def resolved(self) -> dict[str, Any]:
        """The full resolved config as stored with the results: the trial config with the
        training recipe filled in from its preset, the kind and the kind's parameters."""
        values = self.config.model_dump(mode="json")
        values["train"] = self.config.train.resolved().model_dump(mode="json")
        values["kind"] = self.kind
        if self.params:
            values[self.kind] = self.params
        return values


@dataclass
class Study:
    """A validated study file and its trials."""

    path: Path
    source: str  # the file's text
    spec: StudySpec
    trials: list[Trial]
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the overrides changed beyond values
    tuned: TuningLock | None = None  # the lock file whose choices the trials carry (None: untuned)
    lock_text: str | None = None  # its text, kept with the results

    @property
    def name(self) -> str:
        return self.spec.name


# ----------------------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[str, Any]:
    """'train.epochs=1' -> ('train.epochs', 1); the value is parsed as YAML (so 1e-3, [0, 1],
    true, null and {a: 1} work; quote a string that would parse as something else)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise StudyError([f"override {text!r}: expected key=value with a dotted key, e.g. "
                          f"train.epochs=1 or data.root=/data/imagenet"])
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise StudyError([f"override {text!r}: the value is not valid YAML ({exc})"]) from None
    return key, value


def _set_dotted(target: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """{'train.epochs': 1, 'model': {'name': x}} -> nested dict (dotted keys expanded)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        nested: dict[str, Any] = {}
        _set_dotted(nested, key, copy.deepcopy(value))
        out = deep_merge(out, nested)
    return out


def _apply_overrides(raw: dict, overrides: list[tuple[str, Any]], notes: list[str]) -> dict:
    """Overrides replace values of the study. A trial config key (data.*, model.*, train.*,
    measure.*, seed) is set for every trial later, in _expand (over grid values and explicit
    trials); here it only removes a grid axis over that very key."""
    raw = copy.deepcopy(raw)
    for key, value in overrides:
        head = key.split(".")[0]
        if head in TRIAL_SECTIONS:
            # set for every trial when the study expands (see _expand); an axis over exactly
            # this key would only repeat one trial, so it goes
            grid = raw.get("grid")
            if isinstance(grid, dict):
                for axis in [a for a in grid if a == key or a.startswith(key + ".")]:
                    notes.append(f"override {key}: replaces grid axis {axis}")
                    del grid[axis]
        else:
            _set_dotted(raw, key, value)
    return raw


# ----------------------------------------------------------------------------- errors

def _describe(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at loc[-1] (None if not a model)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            args = [a for a in getattr(current, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = args[0] if args else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _error_text(error: dict, model: type[BaseModel]) -> str:
    """'<problem>; got <value>; allowed: <values>' for one pydantic error."""
    error_type, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    got = f"got {_describe(error.get('input'))}"
    if error_type == "extra_forbidden":
        holder = _model_at(model, loc)
        valid = ", ".join(holder.model_fields) if holder else "see the documentation"
        return f"unknown key; valid keys here: {valid}"
    if error_type == "missing":
        return "required but missing"
    if error_type == "literal_error":
        return f"{got}; allowed: {ctx.get('expected')}"
    if error_type in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}[error_type]
        bound = next(iter(ctx.values()))
        return f"{got}; must be {sign} {bound}"
    if error_type == "value_error":
        return f"{str(ctx.get('error', error['msg']))}"
    if error_type == "too_short":
        return f"{got}; needs at least {ctx.get('min_length')} item(s)"
    if error_type == "string_pattern_mismatch":
        return f"{got}; must match {ctx.get('pattern')} (letters, digits, _ . -)"
    expected = error["msg"].replace("Input should be ", "expected ")
    return f"{got}; {expected}"


def _loc_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


# ----------------------------------------------------------------------------- loading

# The studies shipped with discbench (the repository's studies/ folder).
SHIPPED_STUDIES = Path(__file__).resolve().parents[1] / "studies"
# `make study` and a bare `discbench run`: of the studies that run on 2 CPU cores within ten
# minutes, the one whose method differences stand furthest outside seed noise (README, Studies).
DEFAULT_STUDY = "sampling_rate_noconv"


def study_files(folder: Path) -> list[Path]:
    """The study files in `folder`, sorted (not the tuning lock files beside them)."""
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.endswith(LOCK_SUFFIX))


def find_study(name: str | Path) -> Path:
    """A study file from a path, or from a bare name: ./studies/<name>.yaml, then the shipped
    studies/<name>.yaml (so `discbench run digits` works from any folder)."""
    path = Path(name)
    if path.is_file() or path.suffix or len(path.parts) > 1:
        return path
    for folder in (Path("studies"), SHIPPED_STUDIES):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return path


def _read_yaml(path: Path) -> tuple[str, dict]:
    if not path.is_file():
        shipped = [p.stem for p in study_files(SHIPPED_STUDIES)]
        names = f"; shipped studies: {', '.join(shipped)}" if shipped else ""
        raise StudyError([f"{path}: no such study file (give a path to a .yaml file or a study name{names})"])
    text = path.read_text()
    try:
        raw = _yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StudyError([f"{path}: not valid YAML{where}: {problem}"]) from None
    if not isinstance(raw, dict):
        raise StudyError([f"{path}: a study file is a YAML mapping (name:, description:, methods:, …); "
                          f"got {type(raw).__name__}"])
    return text, raw


def _method_keys(path: Path, methods: list[str] | str, where: str) -> tuple[list[str], list[str]]:
    """Method keys 'name/variant' from the study's list, and the problems found."""
    if methods == "all":
        return list(METHODS), []
    keys, problems = [], []
    for i, method in enumerate(methods):
        name, variant = parse_method(str(method))
        if name == "all" and "/" in str(method) and variant in VARIANTS:
            keys.extend(f"{method}/{variant}" for method in METHOD_NAMES)
            continue
        if name not in METHOD_NAMES or variant not in VARIANTS:
            problems.append(f"{path}: {where}[{i}]: unknown method {_describe(method)}; allowed: "
                            f"{', '.join(METHOD_NAMES)}, each optionally /{' or /'.join(VARIANTS)} "
                            f"(e.g. zoh/paper), all/{' or all/'.join(VARIANTS)}, or `all`")
            continue
        keys.append(f"{name}/{variant}")
    seen = [k for i, k in enumerate(keys) if k in keys[:i]]
    if seen:
        problems.append(f"{path}: {where}: {', '.join(sorted(set(seen)))} listed twice")
    return keys, problems


def _is_bundle_axis(values: list[Any]) -> bool:
    """A named axis: every value sets several config keys at once ({model.name: …, train.preset: …})."""
    return bool(values) and all(isinstance(v, dict) and v for v in values)


def _slug(value: Any) -> str:
    if isinstance(value, dict):
        return "+".join(f"{k}-{_slug(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "-".join(_slug(v) for v in value)
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_")
    return text or "x"


def _trial_id(method_key: str, settings: list[tuple[str, Any]]) -> str:
    parts = [method_key.replace("/", "-")]
    for key, value in settings:
        if isinstance(value, dict) and key.split(".")[0] not in TRIAL_SECTIONS:  # named axis
            value = "+".join(_slug(v) for v in value.values())
        parts.append(f"{key.split('.')[-1]}={_slug(value)}")
    text = "__".join(parts)
    if len(text) > TRIAL_ID_MAX:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        text = text[:TRIAL_ID_MAX - 9] + "_" + digest
    return text


def _origin_path(loc: tuple, origins: dict[str, str]) -> str:
    """The study-file path of the value at trial-config `loc`: the longest dotted prefix of
    loc that a grid axis, explicit trial or override set, else the base section."""
    dotted = [str(p) for p in loc]
    for n in range(len(dotted), 0, -1):
        prefix = ".".join(dotted[:n])
        if prefix in origins:
            rest = _loc_path(tuple(loc[n:]))
            source = origins[prefix]
            return source + (("." + rest if not rest.startswith("[") else rest) if rest else "")
    return _loc_path(loc)


def _flat_origins(prefix: str, value: Any, source: str, out: dict[str, str]) -> None:
    out[prefix] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _flat_origins(f"{prefix}.{key}", sub, f"{source}.{key}", out)


def _check_model(cfg: TrialConfig) -> str | None:
    """Build the trial's model (one block deep, so cheaply): catches an unknown model name, a
    model that cannot read the data, unknown or bad model.kwargs, a patch size that does not
    divide the image."""
    fields = cfg.model_dump(mode="json", include={"model", "data", "method", "variant"})
    return _check_model_cached(json.dumps(fields, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _check_model_cached(fields_json: str) -> str | None:
    import timm

    from .scan import BACKENDS
    from .train import model_arguments

    cfg = TrialConfig.model_validate(json.loads(fields_json))
    model = cfg.model
    if model.scan_backend not in ("auto", *BACKENDS):
        return (f"model.scan_backend: got {model.scan_backend!r}; allowed: auto, {', '.join(BACKENDS)}")
    try:
        kwargs = model_arguments(cfg, num_classes=10)
    except ValueError as exc:
        return f"model.name: {exc}"
    # One block is enough to check every argument; a full-depth Vim-B would cost ~0.4 GB.
    shallow = {**kwargs, "depth": 1} if "depth" not in kwargs else kwargs
    try:
        try:
            timm.create_model(model.name, pretrained=False, **shallow)
        except TypeError:
            timm.create_model(model.name, pretrained=False, **kwargs)  # a model without `depth`
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        where = "model.kwargs" if model.kwargs else "model"
        return f"{where}: {model.name} with {_describe(model.kwargs)} cannot be built: {exc}"
    return None


@dataclass(frozen=True)
class Candidate:
    """One trial before validation: what _expand gathered from methods × grid or an explicit trial."""

    method_key: str  # "name/variant"
    origin: str  # where in the study file it comes from, e.g. "methods[1] × grid.seed[0]"
    values: dict[str, Any]  # the nested trial config (without method and variant)
    origins: dict[str, str]  # dotted trial-config key -> the study-file path that set it
    settings: list[tuple[str, Any]]  # the axes that vary, or [("id", id)]: what names the trial
    reference: str | None = None  # a reference model's name (its method_key is a placeholder)

    @property
    def name_key(self) -> str:
        """What a trial id starts with: the method key, or ref-<model> for a reference."""
        return f"ref-{self.reference}" if self.reference else self.method_key

    @property
    def arm_id(self) -> str:
        explicit = [v for k, v in self.settings if k == "id"]
        return _slug(explicit[0]) if explicit else _trial_id(self.name_key, [s for s in self.settings
                                                                            if s[0] != "seed"])


def _expand(path: Path, spec: _StudyFields, raw: dict, overrides: list[tuple[str, Any]],
            tuned: TuningLock | None = None) -> tuple[list[Trial], list[str]]:
    problems: list[str] = []
    method_keys, method_problems = _method_keys(path, spec.methods, "methods")
    problems += method_problems
    base = {key: copy.deepcopy(raw[key]) for key in TRIAL_SECTIONS if key in raw}
    base_origins: dict[str, str] = {}
    for key, value in base.items():
        _flat_origins(key, value, key, base_origins)
    # Overrides of trial keys win over the base, grid axes and explicit trials alike.
    trial_overrides = [(k, v) for k, v in overrides if k.split(".")[0] in TRIAL_SECTIONS]
    forced = nest_dotted(dict(trial_overrides))
    forced_origins: dict[str, str] = {}
    for key, value in trial_overrides:
        _flat_origins(key, value, f"-o {key}", forced_origins)

    for axis, values in spec.grid.items():
        if axis.split(".")[0] in ("method", "variant", "methods"):
            problems.append(f"{path}: grid.{axis}: methods are not a grid axis; list them under `methods:`")
        elif axis.split(".")[0] not in TRIAL_SECTIONS and not _is_bundle_axis(values):
            problems.append(f"{path}: grid.{axis}: not a trial config key; a grid axis is a dotted key "
                            f"under {', '.join(TRIAL_SECTIONS)} (e.g. train.epochs, seed, model.name), "
                            f"or a named axis whose values are mappings of such keys")
        elif axis.split(".")[0] not in TRIAL_SECTIONS:
            for i, value in enumerate(values):
                bad = [k for k in value if str(k).split(".")[0] not in TRIAL_SECTIONS]
                if bad:
                    problems.append(f"{path}: grid.{axis}[{i}].{bad[0]}: not a trial config key (a key under "
                                    f"{', '.join(TRIAL_SECTIONS)})")
        if not values:
            problems.append(f"{path}: grid.{axis}: empty list of values; give at least one value "
                            f"(or remove the axis)")
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            problems.append(f"{path}: grid.{axis}: value {_describe(repeated[0])} appears twice")
    if problems:
        return [], problems

    candidates: list[Candidate] = []
    axes = list(spec.grid.items())
    for m_index, key in enumerate(method_keys):
        for combo in itertools.product(*[[(axis, i, v) for i, v in enumerate(values)] for axis, values in axes]):
            values, origins, settings = copy.deepcopy(base), dict(base_origins), []
            for axis, i, value in combo:
                bundle = axis.split(".")[0] not in TRIAL_SECTIONS
                nested = nest_dotted(value if bundle else {axis: value})
                values = deep_merge(values, nested)
                for set_key, sub in (value.items() if bundle else [(axis, value)]):
                    _flat_origins(set_key, sub, f"grid.{axis}[{i}]" + (f".{set_key}" if bundle else ""), origins)
                if len(spec.grid[axis]) > 1:
                    settings.append((axis, value))
            origin = f"methods[{m_index}]" + "".join(f" × grid.{a}[{i}]" for a, i, _ in combo)
            candidates.append(Candidate(key, origin, deep_merge(values, forced), {**origins, **forced_origins},
                                        settings))
    for r_index, ref in enumerate(spec.references):
        method_models = {c.values.get("model", {}).get("name") for c in candidates}
        problems += _reference_problems(path, r_index, ref, method_models)
        kept = [(axis, values) for axis, values in axes if not axis.startswith("model.")]
        for combo in itertools.product(*[[(axis, i, v) for i, v in enumerate(values)] for axis, values in kept]):
            values = {k: v for k, v in copy.deepcopy(base).items() if k != "model"}
            origins = {k: v for k, v in base_origins.items() if not k.startswith("model.")}
            values["model"] = {"name": ref.name, "kwargs": copy.deepcopy(ref.kwargs)}
            origins.update({"model.name": f"references[{r_index}]", "model.kwargs": f"references[{r_index}].kwargs"})
            settings = []
            for axis, i, value in combo:
                bundle = axis.split(".")[0] not in TRIAL_SECTIONS
                chosen = {k: v for k, v in value.items() if not str(k).startswith("model.")} if bundle else {axis: value}
                values = deep_merge(values, nest_dotted(chosen))
                for set_key, sub in chosen.items():
                    _flat_origins(set_key, sub, f"grid.{axis}[{i}]", origins)
                if len(spec.grid[axis]) > 1:
                    settings.append((axis, value))
            forced_here = {k: v for k, v in forced.items() if k != "model"}
            origin = f"references[{r_index}]" + "".join(f" × grid.{a}[{i}]" for a, i, _ in combo)
            candidates.append(Candidate(REFERENCE_METHOD, origin, deep_merge(values, forced_here),
                                        {**origins, **forced_origins}, settings, reference=ref.name))
    for t_index, extra in enumerate(spec.trials):
        extra = dict(extra)
        explicit_id = extra.pop("id", None)
        method = extra.pop("method", None)
        where = f"trials[{t_index}]"
        if method is None:
            problems.append(f"{path}: {where}.method: required in an explicit trial (e.g. method: foh/paper)")
            continue
        keys, bad = _method_keys(path, [method], f"{where}.method")
        if bad:
            problems += [p.replace(f"{where}.method[0]", f"{where}.method") for p in bad]
            continue
        unknown = [k for k in extra if k.split(".")[0] not in TRIAL_SECTIONS]
        if unknown:
            problems.append(f"{path}: {where}.{unknown[0]}: unknown key; an explicit trial sets method, "
                            f"id and trial config keys under {', '.join(TRIAL_SECTIONS)}")
            continue
        nested = nest_dotted(extra)
        values, origins = deep_merge(base, nested), dict(base_origins)
        for k, v in nested.items():
            _flat_origins(k, v, f"{where}.{k}", origins)
        settings = [(k, v) for k, v in sorted(extra.items())]
        if explicit_id is not None:
            settings = [("id", explicit_id)]
        candidates.append(Candidate(keys[0], where, deep_merge(values, forced), {**origins, **forced_origins},
                                    settings))

    if tuned is not None:
        candidates, lock_problems = _apply_lock(path, candidates, tuned)
        problems += lock_problems
        if problems:
            return [], problems

    trials: list[Trial] = []
    kind = TRIAL_KINDS[spec.kind]
    params = {}
    if kind.params is not None:
        section = getattr(spec, spec.kind) or kind.params()
        params = section.model_dump(mode="json")
    seen: dict[str, str] = {}
    used_ids: dict[str, str] = {}
    for candidate in candidates:
        key, origin, origins, settings = (candidate.method_key, candidate.origin, candidate.origins,
                                          candidate.settings)
        name, variant = parse_method(key)
        try:
            cfg = TrialConfig.model_validate({**candidate.values, "method": name, "variant": variant})
        except ValidationError as exc:
            for error in exc.errors():
                where = _origin_path(error["loc"], origins) or "trial config"
                problems.append(f"{path}: {where}: {_error_text(error, TrialConfig)} (trial {origin})")
            continue
        if DATASETS[cfg.data.dataset].needs_root and cfg.data.root is None:
            problems.append(f"{path}: data.root: dataset {cfg.data.dataset!r} needs data.root, the folder "
                            f"that holds it (or pass --data-root / -o data.root=PATH)")
            continue
        if kind.builds_model:
            model_problem = _check_model(cfg)
            if model_problem:
                where, _, problem = model_problem.partition(": ")
                where = _origin_path(tuple(where.split(".")), origins)
                problems.append(f"{path}: {where}: {problem} (trial {origin})")
                continue
        explicit = [v for k, v in settings if k == "id"]
        trial_id = _slug(explicit[0]) if explicit else _trial_id(candidate.name_key, settings)
        trial = Trial(trial_id, spec.kind, cfg, params, spec.resources, origin, candidate.arm_id,
                      candidate.reference)
        fingerprint = json.dumps(trial.resolved(), sort_keys=True)
        if fingerprint in seen:
            problems.append(f"{path}: {origin}: duplicate trial: same configuration as {seen[fingerprint]} "
                            f"({key}); remove one of them")
            continue
        seen[fingerprint] = origin
        if trial_id in used_ids:
            digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:6]
            trial = Trial(f"{trial_id}__{digest}", spec.kind, cfg, params, spec.resources, origin, candidate.arm_id,
                          candidate.reference)
        used_ids[trial.trial_id] = origin
        trials.append(trial)
    return trials, problems


# A reference trial's method fields: a placeholder its model ignores (the model has no discretization).
REFERENCE_METHOD = "zoh/canonical"


def _reference_problems(path: Path, index: int, ref: Reference, method_models: set) -> list[str]:
    """A reference must be a registered model without a discretization, and not one the methods run on."""
    from .models import model_info

    where = f"{path}: references[{index}]"
    try:
        info = model_info(ref.name)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    if info.discretized:
        return [f"{where}: {ref.name} is discretized; a reference is a model without a discretization "
                f"(list it under model.name to compare methods on it)"]
    if ref.name in method_models:
        return [f"{where}: {ref.name} is also the methods' model; list it in one place"]
    return []


def _apply_lock(path: Path, candidates: list[Candidate], tuned: TuningLock) -> tuple[list[Candidate], list[str]]:
    """Each candidate with its arm's chosen values from the lock (under the overrides, which win:
    a key an override set keeps the override's value)."""
    out, problems = [], []
    where = lock_path(path)
    for candidate in candidates:
        choice = tuned.arms.get(candidate.arm_id)
        if choice is None:
            problems.append(f"{where}: arm {candidate.arm_id!r} ({candidate.origin}) was not tuned (the lock has "
                            f"{', '.join(tuned.arms)}); run discbench tune {path}")
            continue
        if candidate.values.get("seed", 0) == tuned.tune.seed:
            problems.append(f"{path}: seed {tuned.tune.seed} ({candidate.origin}) is the tuning seed of {where}; "
                            f"the confirmation runs on fresh seeds: choose others")
            continue
        chosen = {k: v for k, v in choice.chosen.items() if not str(candidate.origins.get(k, "")).startswith("-o ")}
        origins = {**candidate.origins, **{k: f"{where.name}: arms.{candidate.arm_id}.chosen.{k}" for k in chosen}}
        out.append(Candidate(candidate.method_key, candidate.origin, deep_merge(candidate.values, nest_dotted(chosen)),
                             origins, candidate.settings, candidate.reference))
    return out, problems


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
               data_root: str | None = None, apply_lock: bool = True) -> Study:
    """Read, override and validate a study file and expand it into trials. With apply_lock, a
    study with a `tune:` section and a lock file beside it (studies/<name>.tuned.yaml) runs each
    arm at its chosen values (`discbench tune` loads without it).

    Raises StudyError listing every problem (file, field path, bad value, allowed values).
    """
    path = find_study(path)
    if path.name.endswith(LOCK_SUFFIX):
        raise StudyError([f"{path}: a tuning lock file (written by discbench tune), not a study; give "
                          f"{path.name[:-len(LOCK_SUFFIX)]}.yaml"])
    text, raw = _read_yaml(path)
    parsed = [parse_override(o) for o in overrides]
    if data_root is not None:
        parsed.append(("data.root", str(data_root)))
    notes: list[str] = []
    raw = _apply_overrides(raw, parsed, notes)
    spec_model = study_spec_model()
    try:
        spec = spec_model.model_validate(raw)
    except ValidationError as exc:
        override_keys = {k for k, _ in parsed}
        problems = []
        for error in exc.errors():
            where = _loc_path(error["loc"])
            if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
                problems.append(f"{path}: {where}: unknown key; valid keys: {', '.join(spec_model.model_fields)}")
                continue
            if error["loc"] and error["loc"][0] == "methods" and error["type"].startswith("literal"):
                continue  # the list alternative's error says it better
            prefix = "-o " if where in override_keys else ""
            problems.append(f"{path}: {prefix}{where}: {_error_text(error, spec_model)}")
        raise StudyError(problems) from None
    for section in [k for k, v in TRIAL_KINDS.items() if v.params is not None and k != spec.kind]:
        if getattr(spec, section) is not None:
            raise StudyError([f"{path}: {section}: only for kind {section!r}; this study's kind is {spec.kind!r}"])
    tuned = lock_text = None
    if apply_lock and spec.tune is not None and lock_path(path).is_file():
        try:
            tuned = read_lock(lock_path(path))
        except ValueError as exc:
            raise StudyError([str(exc)]) from None
        if set(tuned.tune.space) != set(spec.tune.space):
            raise StudyError([f"{lock_path(path)}: tuned {', '.join(tuned.tune.space)}, but the study's tune.space "
                              f"is {', '.join(spec.tune.space)}; run discbench tune {path} again"])
        was, now = tuned.tune.model_dump(mode="json"), spec.tune.model_dump(mode="json")
        changed = [k for k in now if was.get(k) != now[k]]
        if changed:  # the choices answer another search than the one the study now declares
            raise StudyError([f"{lock_path(path)}: tuned under tune.{k} = {_describe(was.get(k))}, but the study now "
                              f"says {_describe(now[k])}" for k in changed]
                             + [f"run discbench tune {path} again (or restore the study's tune section)"])
        lock_text = lock_path(path).read_text()
    trials, problems = _expand(path, spec, raw, parsed, tuned)
    if not problems and not trials:
        problems.append(f"{path}: methods × grid gives no trials")
    if problems:
        raise StudyError(problems)
    return Study(path, text, spec, trials, [f"{k}={_describe(v)}" for k, v in parsed], notes, tuned, lock_text)


# ----------------------------------------------------------------------------- table

def trial_table(study: Study) -> list[str]:
    """One line per trial: id, method, model, dataset, input shape, epochs, seed, resources."""
    from .data import input_size

    header = ["trial", "method", "model", "data", "input", "epochs", "seed", "cpus", "gpus", "workers"]
    rows = []
    for t in study.trials:
        recipe = t.config.train.resolved()
        kind = TRIAL_KINDS[t.kind]
        epochs = str(recipe.epochs) if kind.trains else "-"
        rows.append([t.trial_id, "reference" if t.reference else t.method_key, t.config.model.name if kind.builds_model else "-",
                     t.config.data.dataset if kind.trains else "-",
                     "×".join(map(str, input_size(t.config.data))) if kind.trains else "-",
                     epochs, str(t.config.seed), f"{t.resources.cpus:g}",
                     f"{t.resources.gpus:g}", str(t.resources.workers)])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows]


# ----------------------------------------------------------------------------- command

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", nargs="+", metavar="STUDY",
                        help="study files (studies/*.yaml) or names of shipped studies (digits, …)")
    add_override_arguments(parser)
    parser.add_argument("--list", action="store_true", help="also print each study's trials")


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a study value, e.g. -o train.epochs=1 -o data.root=/data/imagenet "
                             "(values are YAML; trial keys apply to every trial and replace grid axes)")
    parser.add_argument("--data-root", default=None, metavar="PATH",
                        help="where the dataset lives (same as -o data.root=PATH)")


def run_command(args: argparse.Namespace) -> int:
    status = 0
    for name in args.studies:
        try:
            study = load_study(name, args.override, args.data_root)
        except StudyError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            status = 1
            continue
        kind = f"{study.spec.kind}, " if study.spec.kind != DEFAULT_KIND else ""
        print(f"{name}: ok — study {study.name!r} ({kind}{len(study.trials)} trials)")
        for note in study.notes:
            print(f"  note: {note}")
        if study.tuned is not None:
            print(f"  tuned: {len(study.tuned.arms)} arms at their values from {lock_path(study.path)}")
        elif study.spec.tune is not None:
            print(f"  untuned: no {lock_path(study.path)} (discbench tune writes it)")
        if args.list:
            print("\n".join("  " + line for line in trial_table(study)))
    return status


__all__ = ["find_study", "study_files", "DEFAULT_STUDY", "Study", "StudySpec", "Trial", "Resources", "StudyError", "load_study",
           "parse_override", "trial_table", "configure_parser", "run_command", "add_override_arguments"]
