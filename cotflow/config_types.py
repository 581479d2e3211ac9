"""What every params.yaml section is built from: the base section and the value types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Prob = Annotated[float, Field(gt=0, le=1)]
ClipEps = Annotated[float, Field(gt=0, lt=1)]


class ConfigError(ValueError):
    """params.yaml is malformed; the message names the key."""


class Section(BaseModel):
    """A params.yaml section: every key required, unknown keys and loose types refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
