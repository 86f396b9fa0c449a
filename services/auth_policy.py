"""A service's auth policy at the gateway: which header carries the key, which extra headers or
query parameters callers must send, and which source networks may call.

Pure checks (no database) used by the model's `clean()` and the actions, so the form and the API
report the same messages on the same fields; plus reading and writing the encrypted parameters.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from console.crypto import CredentialsUnreadable, decrypt_json, encrypt_json

# RFC 9110 token: what an HTTP field name may be.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
# Query parameter names kept to URL-safe characters, so nobody has to think about encoding.
QUERY_NAME = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
# Headers the gateway or the HTTP connection owns; a policy may not claim them.
RESERVED_HEADERS = frozenset(
    {
        "connection", "content-length", "content-type", "content-encoding", "cookie", "host",
        "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
    }
)  # fmt: skip
MAX_PARAMS = 16
MAX_PARAM_VALUE = 1024
MAX_CIDRS = 64
PLACES = ("header", "query")


def header_name_problem(name: object, *, field_label: str = "header") -> str | None:
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        return (
            f"{name!r} is not a valid {field_label} name: letters, digits and !#$%&'*+-.^_`|~ only, "
            "at most 64 characters (e.g. X-Api-Key)."
        )
    if name.lower() in RESERVED_HEADERS:
        return f"{name} is set by HTTP or the gateway itself; choose another header."
    return None


def auth_header_problems(auth_header: str) -> list[str]:
    """`Authorization` means `Authorization: Bearer <key>`; any other header carries the raw key."""
    problem = header_name_problem(auth_header)
    return [problem] if problem else []


def is_header_value(value: str) -> bool:
    """Printable ASCII (spaces inside allowed), nothing a client or server would alter."""
    return value == value.strip() and all(" " <= c <= "~" for c in value)


def param_problems(params: object, *, auth_header: str = "Authorization") -> list[str]:
    """[{"in": "header"|"query", "name": ..., "value": ...}], after `fill_kept_values`: every
    parameter needs a value by now."""
    if not isinstance(params, list):
        return ['Give a list of {"in": "header" or "query", "name": ..., "value": ...}.']
    if len(params) > MAX_PARAMS:
        return [f"At most {MAX_PARAMS} extra parameters."]
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in params:
        if not isinstance(item, dict) or not {"in", "name"} <= set(item) <= {"in", "name", "value"}:
            problems.append('Each parameter has "in" (header or query), "name" and "value".')
            continue
        place, name, value = item["in"], item["name"], item.get("value")
        if place not in PLACES:
            problems.append(f'{name}: "in" must be header or query, not {place!r}.')
            continue
        if place == "header":
            problem = header_name_problem(name)
            if problem:
                problems.append(problem)
                continue
            if name.lower() == auth_header.lower():
                problems.append(f"{name} already carries the key; choose another header.")
                continue
        elif not isinstance(name, str) or not QUERY_NAME.match(name):
            problems.append(
                f"{name!r} is not a valid query parameter name: letters, digits and ._~- only, "
                "at most 64 characters."
            )
            continue
        identity = (place, name.lower() if place == "header" else name)
        if identity in seen:
            problems.append(f"The {place} {name} is given twice.")
        seen.add(identity)
        if not isinstance(value, str) or not value:
            problems.append(f"Give a value for the {place} {name}.")
        elif len(value) > MAX_PARAM_VALUE or any(c in value for c in "\r\n\0"):
            problems.append(f"The value of {name} must be one line of at most {MAX_PARAM_VALUE} characters.")
        elif place == "header" and not is_header_value(value):
            # Clients send header values as ASCII and servers strip the ends: anything else
            # could never be matched.
            problems.append(f"The value of {name} must be printable ASCII without spaces at either end.")
    return problems


def cidr_problems(cidrs: object) -> list[str]:
    if not isinstance(cidrs, list):
        return ['Give a list of networks, e.g. ["10.0.0.0/8", "2001:db8::/32"].']
    if len(cidrs) > MAX_CIDRS:
        return [f"At most {MAX_CIDRS} networks."]
    problems = []
    for cidr in cidrs:
        if not isinstance(cidr, str):
            problems.append(f"{cidr!r} is not a network.")
            continue
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            try:
                hint = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.append(f"{cidr!r} is not an IPv4 or IPv6 network such as 10.0.0.0/8.")
            else:
                problems.append(f"{cidr} has host bits set; did you mean {hint}?")
    return problems


def normalize_cidrs(cidrs: list[str]) -> list[str]:
    """Canonical spelling (2001:DB8::/32 -> 2001:db8::/32), order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for cidr in cidrs:
        seen.setdefault(str(ipaddress.ip_network(cidr, strict=True)), None)
    return list(seen)


def stored_params(encrypted: str) -> list[dict[str, str]]:
    """The stored parameters with their values (for the gateway). [] when none."""
    return list(decrypt_json(encrypted).get("params", []))


def encrypt_params(params: list[dict[str, Any]]) -> str:
    if not params:
        return ""
    return encrypt_json({"params": [{"in": p["in"], "name": p["name"], "value": p["value"]} for p in params]})


def stored_params_differ(before: str, after: str) -> bool:
    try:
        return stored_params(before) != stored_params(after)
    except CredentialsUnreadable:
        return True


def param_names(encrypted: str) -> list[dict[str, Any]]:
    """What may be shown back: where and what, never the value."""
    try:
        params = stored_params(encrypted)
    except CredentialsUnreadable:  # stored with another key: names are lost with the values
        return []
    return [{"in": p["in"], "name": p["name"], "value_set": True} for p in params]


def fill_kept_values(params: list[dict[str, Any]], encrypted: str) -> list[dict[str, Any]]:
    """A parameter given without a value keeps the stored value of the same place and name, so a
    form or a client that only saw the names can re-send them unchanged."""
    try:
        stored = {(p["in"], p["name"]): p["value"] for p in stored_params(encrypted)}
    except CredentialsUnreadable:
        stored = {}
    filled = []
    for item in params:
        if isinstance(item, dict) and not item.get("value") and (item.get("in"), item.get("name")) in stored:
            item = {**item, "value": stored[(item["in"], item["name"])]}
        filled.append(item)
    return filled
