"""params.yaml `algorithms`: one entry per named algorithm, validated by the `Settings` of
the recipe its `kind` names (cotflow/recipes)."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from cotflow.recipes import RECIPES

# The discriminated union of every recipe's settings: an entry's `kind` picks its schema.
Algorithm = Annotated[Union[tuple(r.settings for r in RECIPES.values())],  # noqa: UP007
                      Field(discriminator="kind")]
