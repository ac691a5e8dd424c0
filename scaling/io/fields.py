"""The building blocks of every config schema: the strict base model and bounded number
types (one home, shared by the experiment, strategy and sweep schemas)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A frozen schema that refuses unknown fields, inf and NaN (``.inf`` in YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The largest integer any count field takes: far above every meaningful size (a trillion
#: layers, sequences or steps), low enough that sizes times sizes stay exact in float64.
MAX_COUNT = 10**12
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: The largest value of a float knob (MiB, seconds, µs, tokens, W, USD): beyond any meaning.
MAX_VALUE = 1e15
PosFloat = Annotated[float, Field(gt=0, le=MAX_VALUE)]
NonNegFloat = Annotated[float, Field(ge=0, le=MAX_VALUE)]

#: A name that becomes a folder under ``results/``: no path separators, no ``..``, no leading
#: dot, at most 100 characters (file systems allow 255 bytes per component).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+=-]{0,99}")


def safe_name(v: str) -> str:
    """``v`` if it is usable as one folder name (see ``_SAFE_NAME``); else a ValueError."""
    if not _SAFE_NAME.fullmatch(v) or ".." in v:
        raise ValueError(
            "a name of 1-100 letters, digits, '.', '_', '-', '+' or '=' (it names the folder "
            "results/<name>: no '/', no '..', no leading '.')"
        )
    return v
