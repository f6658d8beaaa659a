"""Option types that several ``skyclass`` commands share."""

from __future__ import annotations

from typing import Any

import click


class ObjectIds(click.ParamType[list[int], Any]):
    """Object ids separated by commas or spaces (``--ids "12, 15 19"``), as a list of ints."""

    name = "IDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        try:
            ids = [int(part) for part in str(value).replace(",", " ").split()]
        except ValueError:
            self.fail(f"object ids separated by commas or spaces, not {value!r}", param, ctx)
        if not ids:
            self.fail("give at least one object id", param, ctx)
        return ids


#: ``type=OBJECT_IDS`` for an ``--ids`` option.
OBJECT_IDS = ObjectIds()
