"""Quantities of the catalog files: ``{value, source, confidence}`` with an optional ``note`` and
``low``/``high`` range, their bounded kinds, structural alternatives, and flattening helpers.

Confidence is one of ``vendor spec``, ``measured``, ``secondary``, ``assumption`` or
``calibrated``; an assumption must say its reasoning in ``note``; an assumption or a secondary
figure carries a plausible range (what ``scaling sensitivity`` varies).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "RANGED",
    "AlternativeSchema",
    "CountQ",
    "Frac0Q",
    "FracQ",
    "NonNegQ",
    "OversubQ",
    "PosQ",
    "apply_alternative",
    "quantities",
    "ranged_quantities",
]

Confidence = Literal["vendor spec", "measured", "secondary", "assumption", "calibrated"]


class _Strict(BaseModel):
    # an infinite or NaN bandwidth, latency or count means nothing: refused (``.inf`` in YAML)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The largest value of a quantity in its file unit (GB/s, µs, TFLOPS, GB, W, USD): a billion
#: of any of them is beyond every real part, so a larger one is a typo (1e18 GB/s).
MAX_QUANTITY = 1e9
#: The largest count (devices or NICs per node, compute units, nodes per leaf, channels):
#: the network is built per device and NIC, so this bounds a node's size; real parts are <= 132.
MAX_QUANTITY_COUNT = 4096


#: Confidences whose numbers must carry a plausible range (``low``, ``high``): the inputs
#: ``scaling run --uncertainty`` samples and ``scaling sensitivity`` ranks.
RANGED: frozenset[str] = frozenset({"assumption", "secondary"})
#: How a ranged number is drawn between ``low`` and ``high`` (default ``triangular``, its mode at
#: ``value``: the nominal figure is the best guess; ``loguniform`` for a factor-of-several span).
Dist = Literal["uniform", "triangular", "loguniform"]


class _Q(_Strict):
    source: str = Field(min_length=1)
    confidence: Confidence
    note: str = ""
    # plausible bounds of the number, in the file unit (reasoning in ``note``); required for an
    # assumption or a secondary figure, optional otherwise; low == high: not varied
    low: float | None = None
    high: float | None = None
    dist: Dist | None = None

    @model_validator(mode="after")
    def _assumption_has_reason(self) -> _Q:
        if self.confidence == "assumption" and not self.note.strip():
            raise ValueError("an assumption needs a 'note' giving its reasoning")
        return self

    @model_validator(mode="after")
    def _range(self) -> _Q:
        value = float(self.value)  # type: ignore[attr-defined]
        if self.low is None or self.high is None:
            if self.confidence in RANGED:
                raise ValueError(
                    f"a range for this {self.confidence} number: 'low' and 'high' (its "
                    "plausible bounds, the reasoning in 'note')"
                )
            if self.low is not None or self.high is not None or self.dist is not None:
                raise ValueError("both 'low' and 'high', or neither")
            return self
        if not self.low <= value <= self.high:
            raise ValueError(
                f"low <= value <= high; got value {value:g} outside its range "
                f"[low {self.low:g}, high {self.high:g}]"
            )
        if self.dist == "loguniform" and self.low <= 0:
            raise ValueError(f"low > 0 for dist loguniform; got low {self.low:g}")
        for end in (self.low, self.high):  # each bound must be a valid value of this field
            try:
                type(self)(value=end, source="range", confidence="measured")  # type: ignore[call-arg]
            except ValidationError as e:
                why = e.errors()[0]["msg"]
                raise ValueError(
                    f"range bounds that are valid values; got {end:g}: {why}"
                ) from None
        return self


class PosQ(_Q):
    """A positive quantity."""

    value: Annotated[float, Field(gt=0, le=MAX_QUANTITY)]


class NonNegQ(_Q):
    """A quantity ≥ 0."""

    value: Annotated[float, Field(ge=0, le=MAX_QUANTITY)]


class FracQ(_Q):
    """A fraction in (0, 1]."""

    value: Annotated[float, Field(gt=0, le=1)]


class Frac0Q(_Q):
    """A fraction in [0, 1)."""

    value: Annotated[float, Field(ge=0, lt=1)]


class CountQ(_Q):
    """A whole count ≥ 1."""

    value: Annotated[int, Field(ge=1, le=MAX_QUANTITY_COUNT)]


class OversubQ(_Q):
    """A ratio ≥ 1."""

    value: Annotated[float, Field(ge=1, le=MAX_QUANTITY)]


class AlternativeSchema(_Strict):
    """A structural assumption's alternative: what the file would say instead (``set``: dotted
    field path → value; a number becomes an ``assumption`` of that value) and why it is
    plausible (``note``). The patched file must validate."""

    name: str = Field(min_length=1, max_length=64)
    note: str = Field(min_length=1)
    set: dict[str, Any] = Field(min_length=1)


def apply_alternative(doc: dict[str, Any], alt: AlternativeSchema, where: str) -> dict[str, Any]:
    """``doc`` (a topology or library dump, not changed) with ``alt``'s fields set; a number is
    written as an ``assumption`` quantity citing the alternative."""
    out = json.loads(json.dumps(doc))
    out.pop("alternatives", None)
    for path, value in alt.set.items():
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ValueError(f"alternatives[{alt.name}] to set fields of {where}; got {path}")
            node = node[k]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = {
                "value": value,
                "source": f"alternative {alt.name!r}",
                "confidence": "assumption",
                "note": alt.note,
                "low": value,
                "high": value,
            }
        node[keys[-1]] = value
    return out


def _check_alternatives(doc: BaseModel, alts: list[AlternativeSchema]) -> None:
    names = [a.name for a in alts]
    if len(set(names)) != len(names):
        raise ValueError(f"unique alternative names; got {names}")
    base = doc.model_dump(mode="json", exclude={"alternatives"})
    for a in alts:
        patched = apply_alternative(base, a, type(doc).__name__)
        try:
            type(doc).model_validate(patched)
        except ValidationError as e:
            err = e.errors()[0]
            at = ".".join(str(x) for x in err["loc"])
            raise ValueError(
                f"alternatives[{a.name}] to give a valid file; {at}: {err['msg']}"
            ) from None


def _rows(val: Any, path: str) -> list[tuple[str, Any]]:
    """Every quantity under ``val`` (a quantity, a dict of them, nested), as (path, quantity)."""
    if isinstance(val, _Q):
        return [(path, val)]
    if isinstance(val, dict):
        out: list[tuple[str, Any]] = []
        for k, v in val.items():
            out += _rows(v, f"{path}.{k.value if hasattr(k, 'value') else k}")
        return out
    return []


def quantities(doc: BaseModel, prefix: str = "") -> list[tuple[str, float, str, str, str]]:
    """Flatten a validated document into (field path, value, confidence, source, note) rows."""
    rows: list[tuple[str, float, str, str, str]] = []
    for name in type(doc).model_fields:
        val = getattr(doc, name)
        path = f"{prefix}{name}"
        if isinstance(val, _Q):
            rows.append((path, val.value, val.confidence, val.source, val.note))  # type: ignore[attr-defined]
        elif isinstance(val, BaseModel):
            rows += quantities(val, path + ".")
        elif isinstance(val, dict):
            for at, v in _rows(val, path):
                rows.append((at, v.value, v.confidence, v.source, v.note))
        elif isinstance(val, list):
            for i, item in enumerate(val):
                if isinstance(item, BaseModel):
                    rows += quantities(item, f"{path}[{i}].")
    return rows


def ranged_quantities(doc: BaseModel, prefix: str = "") -> list[tuple[str, _Q]]:
    """Every quantity of a validated document that carries a range, as (field path, quantity);
    paths as :func:`quantities` writes them (``protocols[0].step_latency_us.network``)."""
    rows: list[tuple[str, _Q]] = []
    for name in type(doc).model_fields:
        val = getattr(doc, name)
        path = f"{prefix}{name}"
        if isinstance(val, _Q):
            if val.low is not None:
                rows.append((path, val))
        elif isinstance(val, BaseModel):
            rows += ranged_quantities(val, path + ".")
        elif isinstance(val, dict):
            rows += [(at, v) for at, v in _rows(val, path) if v.low is not None]
        elif isinstance(val, list):
            for i, item in enumerate(val):
                if isinstance(item, BaseModel) and not isinstance(item, AlternativeSchema):
                    rows += ranged_quantities(item, f"{path}[{i}].")
    return rows
