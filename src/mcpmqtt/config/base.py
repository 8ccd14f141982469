"""The base of every config model: unknown keys are an error, and a loaded config never changes."""

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Forbids unknown keys: a misspelt key that was silently ignored would leave an operator believing
    a limit or a secret was in force when it was not."""

    model_config = ConfigDict(extra="forbid", frozen=True)
