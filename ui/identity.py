"""Who owns a run: nobody in particular locally, a per-browser identity on a shared deployment.

The identity is a random uuid4 kept in the visitor's browser (gr.BrowserState). It is the only
key to a visitor's runs, so a value that does not look like one we issued is never trusted:
it is replaced by a fresh identity, which sees nothing. Owner None (everything) is returned
only for a local, single-user install.
"""

from __future__ import annotations

import uuid

API_PREFIX = "api-"


def new_identity() -> str:
    return uuid.uuid4().hex


def is_identity(value: object) -> bool:
    """True for a 32-hex-digit uuid4 as `new_identity` makes them."""
    if not isinstance(value, str) or len(value) != 32:
        return False
    try:
        return uuid.UUID(hex=value).version == 4
    except ValueError:
        return False


def ensure_identity(value: object) -> str:
    """The browser's identity, or a new one on its first visit (or if it was tampered with)."""
    return value if isinstance(value, str) and is_identity(value) else new_identity()


def owner_for(shared: bool, browser_value: object) -> str | None:
    """The library owner for one page event: None locally, else the browser's identity."""
    if not shared:
        return None
    return ensure_identity(browser_value)


def api_owner(shared: bool) -> str | None:
    """An API caller has no browser: on a shared deployment each call gets its own identity."""
    return f"{API_PREFIX}{new_identity()}" if shared else None
