"""The base of every configuration section (discbench.config, DataConfig in discbench.data):
unknown keys are errors, assignments are validated; and the mark of a field that does not
change a trial's result."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Marks a field that does not change a trial's result (where data lives, how it is read, which
# backend computes the same method, which device): not a factor of a study, and free to change
# between a run and its resumption. config.result_neutral_fields() lists the marked fields.
NO_EFFECT_ON_RESULT = {"affects_result": False}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
