"""Who a visitor is: whose history they see (the owner) and whose allowance they spend (the payer).

Locally both are None: one user sees everything and no cap tells people apart. On a shared
deployment:
- The owner keeps a history private. A signed-in Hugging Face account (`hf:<name>`) owns its
  history wherever it signs in; an anonymous browser owns one through a random uuid4 kept in the
  browser (gr.BrowserState), and a value that does not look like one we issued is replaced by a
  fresh one, which sees nothing. An API call owns its runs through its `access_key`.
- The payer is what the spending caps count, and must cost something to fake: the signed-in
  account, else the client's address (`addr:<ip>`; an IPv6 address by its /64, the block one
  line gets). A new browser id or API call therefore adds no allowance, while callers from
  different addresses never share one. People behind one address (a school, a NAT) share it;
  signing in gives each their own.

The client's address is the connection's peer, except behind a proxy (a Space): then it is the
rightmost public address in X-Forwarded-For, the one the Space's first proxy saw connect. Each
proxy appends the address it received the connection from, so the entries to its right are
the Space's own (private) hops and the entries to its left are whatever the client claimed,
which are never trusted.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gradio.context import LocalContext

API_PREFIX = "api-"
ACCOUNT_PREFIX = "hf:"
ADDRESS_PREFIX = "addr:"
UNKNOWN_ADDRESS = f"{ADDRESS_PREFIX}unknown"
IPV6_BLOCK = 64  # one subscriber's line holds at least a /64: its addresses are free to rotate


@dataclass(frozen=True)
class Visitor:
    """The history a visitor sees (`owner`) and the allowance they spend (`payer`)."""

    owner: str | None
    payer: str | None


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


def current_request() -> Any:
    """The gr.Request of the event being handled (None outside one, e.g. in a unit test)."""
    return LocalContext.request.get(None)


def signed_in_account(request: Any) -> str | None:
    """The Hugging Face account signed in on this request, from the session Gradio's OAuth
    keeps (a cookie signed with the Space's OAuth secret, so it cannot be forged); None when
    nobody is signed in, the sign-in expired, or the app has no sign-in."""
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict):
        return None
    expires = info.get("expires_at")
    if isinstance(expires, int | float) and expires < time.time():
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return f"{ACCOUNT_PREFIX}{name}" if isinstance(name, str) and name else None


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_private or ip.is_loopback or ip.is_link_local


def _address_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return f"{ADDRESS_PREFIX}{mapped}"
        block = ipaddress.IPv6Network((ip, IPV6_BLOCK), strict=False)
        return f"{ADDRESS_PREFIX}{block}"
    return f"{ADDRESS_PREFIX}{ip}"


def client_address(request: Any, *, behind_proxy: bool) -> str:
    """The payer key of the request's client address (see the module docstring)."""
    client = getattr(request, "client", None) if request is not None else None
    peer = _ip(getattr(client, "host", None))
    if behind_proxy and (peer is None or _internal(peer)):
        headers = getattr(request, "headers", None)
        forwarded = headers.get("x-forwarded-for", "") if headers is not None else ""
        for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
            ip = _ip(hop)
            if ip is None:
                break  # a malformed entry: nothing to its left can be trusted
            if not _internal(ip):
                return _address_key(ip)
    return _address_key(peer) if peer is not None else UNKNOWN_ADDRESS


def page_visitor(
    shared: bool, browser_value: object, *, behind_proxy: bool, request: Any = None
) -> Visitor:
    """A page event's visitor: the signed-in account, else the browser's history paid for
    by the client's address."""
    if not shared:
        return Visitor(None, None)
    request = current_request() if request is None else request
    account = signed_in_account(request)
    if account is not None:
        return Visitor(account, account)
    return Visitor(
        ensure_identity(browser_value), client_address(request, behind_proxy=behind_proxy)
    )


def access_owner(access_key: object) -> str | None:
    """The owner an API `access_key` names, when it is one we issue; else None."""
    key = access_key.strip() if isinstance(access_key, str) else ""
    if key.startswith(API_PREFIX) and is_identity(key[len(API_PREFIX) :]):
        return key
    return None


def api_visitor(
    shared: bool, *, behind_proxy: bool, access_key: object = None, request: Any = None
) -> Visitor:
    """An API call's visitor: its own runs (its access key, else a fresh one), paid for by the
    signed-in account or the client's address, never by an allowance all callers share."""
    if not shared:
        return Visitor(None, None)
    request = current_request() if request is None else request
    owner = access_owner(access_key) or f"{API_PREFIX}{new_identity()}"
    payer = signed_in_account(request) or client_address(request, behind_proxy=behind_proxy)
    return Visitor(owner, payer)
