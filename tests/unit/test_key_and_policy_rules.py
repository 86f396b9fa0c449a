"""Pure rules: an inference key's state, limits, expiry and rotation grace; a service's key
header, extra parameters and allowed networks."""

from datetime import UTC, datetime, timedelta

import pytest

from auth.key_rules import expiry_problem, grace_hours_problem, key_state, limit_problem
from services.auth_policy import auth_header_problems, cidr_problems, normalize_cidrs, param_problems

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def state(**fields):
    base = {"revoked_at": None, "disabled_at": None, "expires_at": None, "replaced_by_id": None}
    return key_state(**{**base, **fields}, now=NOW)


def test_key_state_precedence():
    past, future = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    assert state() == "active"
    assert state(expires_at=future) == "active"
    assert state(expires_at=NOW) == "expired"  # the expiry instant itself no longer works
    assert state(replaced_by_id=7, expires_at=future) == "rotated"
    assert state(replaced_by_id=7, expires_at=past) == "expired"  # grace is over
    assert state(disabled_at=past, expires_at=past) == "disabled"
    assert state(revoked_at=past, disabled_at=past, replaced_by_id=7) == "revoked"


@pytest.mark.parametrize(("value", "ok"), [(None, True), (1, True), (10**9, True), (0, False), (-3, False)])
def test_limits_are_empty_or_positive(value, ok):
    assert (limit_problem(value) is None) is ok


def test_expiry_must_be_in_the_future():
    assert expiry_problem(None, now=NOW) is None
    assert expiry_problem(NOW + timedelta(seconds=1), now=NOW) is None
    assert "future" in expiry_problem(NOW, now=NOW)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (24, True), (720, True), (721, False), (-1, False),
                                           (True, False), ("2", False), (1.5, False)])  # fmt: skip
def test_grace_hours(value, ok):
    assert (grace_hours_problem(value) is None) is ok


@pytest.mark.parametrize("name", ["Authorization", "X-Api-Key", "api_key", "X.Key~1"])
def test_good_key_headers(name):
    assert auth_header_problems(name) == []


@pytest.mark.parametrize(
    "name", ["", "X Key", "X-Key:", "Ключ", "X" * 65, "Host", "content-length", "Cookie"]
)
def test_bad_key_headers(name):
    assert auth_header_problems(name)


def test_params():
    good = [{"in": "header", "name": "X-Tenant", "value": "a"}, {"in": "query", "name": "team", "value": "b"}]
    assert param_problems(good) == []
    assert param_problems("header X=1")
    assert param_problems([{"in": "header", "name": "X-A", "value": "a\r\nInjected: 1"}])
    assert param_problems([{"in": "query", "name": "t", "value": "x" * 1025}])
    assert param_problems([{"in": "header", "name": "X-A", "value": "a", "extra": 1}])
    assert param_problems([{"in": "header", "name": f"X-{i}", "value": "v"} for i in range(17)])
    # Header values are what clients send and servers keep: printable ASCII, no spaces at the ends.
    for value in ("acme–corp", "zero\u200bwidth", " acme", "acme\t"):
        assert param_problems([{"in": "header", "name": "X-A", "value": value}]), value
    assert param_problems([{"in": "header", "name": "X-A", "value": "acme corp"}]) == []
    assert param_problems([{"in": "query", "name": "t", "value": "acme–corp"}]) == []  # URL-encoded
    # The default key header is Authorization: it cannot be an extra parameter either.
    assert param_problems([{"in": "header", "name": "authorization", "value": "v"}])
    # The key's own header cannot also be an extra parameter, whatever its case.
    assert param_problems([{"in": "header", "name": "x-api-key", "value": "v"}], auth_header="X-Api-Key")
    # The same query name twice is refused; query names are case-sensitive, headers are not.
    assert param_problems(
        [{"in": "query", "name": "t", "value": "1"}, {"in": "query", "name": "t", "value": "2"}]
    )
    assert (
        param_problems(
            [{"in": "query", "name": "t", "value": "1"}, {"in": "query", "name": "T", "value": "2"}]
        )
        == []
    )


def test_cidrs():
    assert cidr_problems(["10.0.0.0/8", "192.168.1.7/32", "::1/128", "2001:db8::/32", "10.1.2.3"]) == []
    assert "did you mean 10.0.0.0/8" in cidr_problems(["10.0.0.1/8"])[0]
    assert cidr_problems(["300.0.0.0/8"]) and cidr_problems(["10.0.0.0/33"]) and cidr_problems([8])
    assert cidr_problems("10.0.0.0/8")
    assert normalize_cidrs(["2001:DB8::/32", "10.0.0.0/8", "2001:db8::/32", "10.1.2.3"]) == [
        "2001:db8::/32",
        "10.0.0.0/8",
        "10.1.2.3/32",
    ]
