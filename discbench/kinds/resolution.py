"""Trial kind `resolution`: inference images/s and peak memory of the trial's (untrained)
model per batch size × resolution (measure.batch_sizes × measure.resolutions); out of memory
is a result (status "oom"). Reported as the Vim paper's Figure 1 (efficiency table, resolution
figure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..data import DATASETS
from ._base import Estimate, Events, Recorder, TrialKind
from ._inference import QUANTITIES, measure_models, measure_settings

if TYPE_CHECKING:
    from ..config import TrialConfig

# The paper's models have ImageNet's head, whatever the study's (unused) dataset.
HEAD_CLASSES = DATASETS["imagenet"].num_classes


def run_resolution(cfg: TrialConfig, trial: dict, record: Recorder, events: Events) -> dict[str, Any]:
    record.reset_measurements()
    measure_models(cfg, measure_settings(cfg), HEAD_CLASSES, record)
    return {"status": "ok"}


def estimate_resolution(trials: list) -> Estimate:
    from ..measure import inference_throughput
    from ..train import build_model

    total, how = 0.0, []
    for t in trials:
        cfg = t.config
        smallest = min(cfg.measure.resolutions or [cfg.data.image_size])
        sized = cfg.model_copy(update={"data": cfg.data.model_copy(update={"image_size": smallest})})
        model = build_model(sized, HEAD_CLASSES, cfg.train.resolved())
        measured = inference_throughput(model, 1, (3, smallest, smallest), warmup=1, repeats=1)
        if measured["status"] != "ok":
            continue
        per_image = 1.0 / measured["images_per_s"]
        calls = cfg.measure.warmup + cfg.measure.repeats
        for batch, resolution in measure_settings(cfg):
            total += per_image * batch * calls * (resolution / smallest) ** 2
        how.append(f"{cfg.model.name} {t.method_key}: {1e3 * per_image:.0f} ms per image at {smallest}px")
    how.append("extrapolated ∝ pixels × batch (attention in DeiT grows faster: a lower bound there)")
    return Estimate(total, how)


KIND = TrialKind(
    "resolution", None, builds_model=True, trains=False, run=run_resolution, estimate=estimate_resolution,
    quantities=QUANTITIES,
    tables=("discbench.report.tables:efficiency_table",),
    figures=("discbench.report.figures:resolution_figure",))
