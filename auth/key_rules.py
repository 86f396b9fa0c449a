"""Pure rules about one inference key: what its limits and expiry may be, and its state.

No database access here: the model's `clean()` (shared by the form and the serializer) and the
selectors' SQL annotation both follow these definitions.
"""

from __future__ import annotations

from datetime import datetime

ACTIVE, EXPIRED, REVOKED, DISABLED, ROTATED = "active", "expired", "revoked", "disabled", "rotated"
# In order of precedence: a revoked key is revoked even if it has also expired.
STATES = (REVOKED, DISABLED, EXPIRED, ROTATED, ACTIVE)
LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "daily_token_budget", "monthly_token_budget")
MAX_GRACE_HOURS = 24 * 30


def key_state(
    *,
    revoked_at: datetime | None,
    disabled_at: datetime | None,
    expires_at: datetime | None,
    replaced_by_id: int | None,
    now: datetime,
) -> str:
    """Which of STATES a key is in at `now`. A rotated key is `rotated` during its grace period
    (it still works) and `expired` after it."""
    if revoked_at is not None:
        return REVOKED
    if disabled_at is not None:
        return DISABLED
    if expires_at is not None and expires_at <= now:
        return EXPIRED
    if replaced_by_id is not None:
        return ROTATED
    return ACTIVE


def limit_problem(value: int | None) -> str | None:
    """Limits are empty (none) or at least 1: a limit of 0 would be a revoked key in disguise."""
    if value is not None and value < 1:
        return "Give at least 1, or leave it empty for no limit."
    return None


def expiry_problem(expires_at: datetime | None, *, now: datetime) -> str | None:
    if expires_at is not None and expires_at <= now:
        return "Give a time in the future, or leave it empty for a key that does not expire."
    return None


def grace_hours_problem(grace_hours: object) -> str | None:
    if isinstance(grace_hours, bool) or not isinstance(grace_hours, int):
        return "Give a whole number of hours."
    if not 0 <= grace_hours <= MAX_GRACE_HOURS:
        return f"Give 0 (the old key stops at once) to {MAX_GRACE_HOURS} hours."
    return None
