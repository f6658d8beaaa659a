"""Request parameters, checked before any SQL runs.

Every parameter a route reads goes through one of these functions; a bad one
raises :class:`ApiError` naming the parameter, the value and what is allowed,
which the app renders as JSON or as an error VOTable (SCS). Unknown parameters
are refused too, so a misspelt one is not silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_TEXT = 200
INT64 = 2**63 - 1
FORMATS = ("json", "csv", "votable")


class ApiError(Exception):
    """A request the service refuses: HTTP ``status`` and a message naming the parameter."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def check_known(query: Mapping[str, str], allowed: Iterable[str], *, fold: bool = False) -> None:
    """Refuse parameters not in ``allowed`` (case-insensitively with ``fold``, as SCS has it)."""
    names = {a.upper() if fold else a for a in allowed}
    for key in query:
        if (key.upper() if fold else key) not in names:
            raise ApiError(
                400,
                f"unknown parameter {key[:MAX_TEXT]!r}; allowed: {', '.join(sorted(allowed))}",
                param=key[:MAX_TEXT],
            )


def text(value: str | None, param: str, *, required: bool = False) -> str | None:
    """A short printable string, or None when absent and not required."""
    if value is None or value == "":
        if required:
            raise ApiError(400, f"parameter {param!r} is required", param=param)
        return None
    if len(value) > MAX_TEXT or not value.isprintable():
        raise ApiError(
            400,
            f"parameter {param!r} must be printable text of at most {MAX_TEXT} characters",
            param=param,
        )
    return value


def name(value: str | None, param: str, *, required: bool = False) -> str | None:
    """A catalog or deployment name: lower-case letters, digits and _ (as the registry has them)."""
    found = text(value, param, required=required)
    if found is not None and not NAME.match(found):
        raise ApiError(
            400 if param != "catalog" else 404,
            f"{param} {found!r} is not a valid name (lower-case letters, digits and _, "
            "starting with a letter)",
            param=param,
        )
    return found


def number(
    value: str | None,
    param: str,
    *,
    low: float,
    high: float,
    required: bool = False,
    low_open: bool = False,
) -> float | None:
    """A finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    found = text(value, param, required=required)
    if found is None:
        return None
    try:
        x = float(found)
    except ValueError:
        raise ApiError(
            400, f"parameter {param!r} must be a number, not {found!r}", param=param
        ) from None
    opening = "(" if low_open else "["
    if not math.isfinite(x) or x > high or x < low or (low_open and x == low):
        raise ApiError(
            400,
            f"parameter {param!r} must be in {opening}{low:g}, {high:g}], not {found!r}",
            param=param,
        )
    return x


def integer(
    value: str | None, param: str, *, low: int, high: int, required: bool = False
) -> int | None:
    """An integer in ``[low, high]``."""
    found = text(value, param, required=required)
    if found is None:
        return None
    if not re.fullmatch(r"[+-]?\d{1,19}", found):
        raise ApiError(400, f"parameter {param!r} must be an integer, not {found!r}", param=param)
    x = int(found)
    if not low <= x <= high:
        raise ApiError(400, f"parameter {param!r} must be in [{low}, {high}], not {x}", param=param)
    return x


def object_id(value: str) -> int:
    """An object id from the path: a 64-bit integer."""
    found = integer(value, "id", low=-INT64 - 1, high=INT64, required=True)
    assert found is not None
    return found


def choose_format(query: Mapping[str, str], accept: str | None) -> str:
    """``format=`` if given, else the first of VOTable / CSV / JSON the Accept header names."""
    given = query.get("format")
    if given is not None:
        low = given.lower()
        aliases = {
            "xml": "votable",
            "vot": "votable",
            "application/x-votable+xml": "votable",
            "text/csv": "csv",
            "application/json": "json",
        }
        low = aliases.get(low, low)
        if low not in FORMATS:
            raise ApiError(
                400,
                f"format {given[:MAX_TEXT]!r} is not one of {', '.join(FORMATS)}",
                param="format",
            )
        return low
    best: tuple[float, int, str] | None = None
    for i, part in enumerate((accept or "").split(",")):
        media, _, rest = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", rest)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        kind = {
            "application/x-votable+xml": "votable",
            "text/xml": "votable",
            "application/xml": "votable",
            "text/csv": "csv",
            "application/json": "json",
        }.get(media.strip().lower())
        if kind and quality > 0 and (best is None or (quality, -i) > (best[0], best[1])):
            best = (quality, -i, kind)
    return best[2] if best else "json"


def encode_cursor(values: list[Any]) -> str:
    """An opaque keyset cursor: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _cursor_value(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def decode_cursor(value: str | None, kinds: tuple[type, ...]) -> list[Any] | None:
    """The sort key from ``after=``; a cursor the service did not write is refused."""
    found = text(value, "after")
    if found is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(found + "=" * (-len(found) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    ok = (
        isinstance(values, list)
        and len(values) == len(kinds)
        and all(_cursor_value(v, k) for v, k in zip(values, kinds, strict=True))
    )
    if not ok or values is None:
        raise ApiError(
            400,
            "parameter 'after' is not a cursor this service wrote (use the "
            "'next' link of the previous page)",
            param="after",
        )
    assert isinstance(values, list)
    if any(isinstance(v, int) and abs(v) > INT64 for v in values):
        raise ApiError(400, "parameter 'after' is out of range", param="after")
    return values
