"""Settings of the portal service, from options and ``SKYCLASS_SERVE_*`` variables.

uvicorn starts each worker process from an import string, so the settings
travel to the workers in the environment: :meth:`ServeConfig.to_environ` writes
them and :func:`load_serve_config` reads them back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from skyclass.errors import ConfigError

PREFIX = "SKYCLASS_SERVE_"


@dataclass(frozen=True)
class ServeConfig:
    """What the service may do per request, and how many connections it holds.

    ``statement_timeout_ms`` bounds every query; ``max_rows`` caps a cone
    search or SCS response (more rows: the response says it was truncated);
    ``page_size`` is the default and ``max_page_size`` the largest page of the
    paged lists; ``max_radius_deg`` bounds SCS ``SR`` and the cone radius;
    ``pool_size`` connections are shared by all requests of one worker, at
    most ``max_waiting`` requests queue for one and wait ``pool_timeout_s``
    before a deliberate 503. ``portal_url`` is the libpq URL to log in with
    (default: the configured database as role ``skyclass_portal``).
    ``public_url`` is the service's root URL as clients reach it (TAP capabilities and
    job links; default: the address ``skyclass serve`` listens on).
    """

    statement_timeout_ms: int = 5000
    max_rows: int = 10000
    page_size: int = 100
    max_page_size: int = 1000
    max_radius_deg: float = 1.0
    pool_size: int = 8
    max_waiting: int = 200
    pool_timeout_s: float = 5.0
    portal_url: str = ""
    public_url: str = ""

    def __post_init__(self) -> None:
        checks = (
            ("statement_timeout_ms", self.statement_timeout_ms >= 1),
            ("max_rows", self.max_rows >= 1),
            ("page_size", 1 <= self.page_size <= self.max_page_size),
            ("max_page_size", self.max_page_size >= 1),
            ("max_radius_deg", 0 < self.max_radius_deg <= 10),
            ("pool_size", self.pool_size >= 1),
            ("max_waiting", self.max_waiting >= 0),
            ("pool_timeout_s", self.pool_timeout_s > 0),
        )
        for name, ok in checks:
            if not ok:
                raise ConfigError(
                    f"serve setting {name}={getattr(self, name)!r} is out of range "
                    "(page_size must be <= max_page_size, max_radius_deg in (0, 10])"
                )

    def to_environ(self) -> dict[str, str]:
        """These settings as ``SKYCLASS_SERVE_*`` environment variables."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def load_serve_config(**overrides: Any) -> ServeConfig:
    """Settings from ``SKYCLASS_SERVE_*`` variables, then ``overrides`` (None ignored)."""
    values: dict[str, Any] = {}
    for f in fields(ServeConfig):
        text = os.environ.get(PREFIX + f.name.upper())
        if text is None or text == "":
            continue
        kind = type(getattr(ServeConfig(), f.name))
        try:
            values[f.name] = kind(text)
        except ValueError:
            raise ConfigError(
                f"{PREFIX}{f.name.upper()}={text!r} is not a valid {kind.__name__}"
            ) from None
    config = ServeConfig(**values)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
