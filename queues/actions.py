"""Every write to queues, flavors, priority classes and teams. Saving a queue or a flavor also
applies its Kueue objects, after commit, through the worker (queues.tasks)."""

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from queues.models import FlavorQuota, Queue, ResourceFlavor

QUEUE_FIELDS = ("name", "description", "cohort", "strategy")
QUOTA_FIELDS = ("gpus", "cpu", "memory_gib", "gpu_borrowing_limit", "gpu_lending_limit")
# A simple queue: one quota on the default flavor (every node), given as three numbers.
SHORTHAND = {"gpu_quota": "gpus", "cpu_quota": "cpu", "memory_quota_gib": "memory_gib"}


def default_flavor() -> ResourceFlavor:
    flavor, _ = ResourceFlavor.objects.get_or_create(
        name=ResourceFlavor.DEFAULT, defaults={"description": "Every node."}
    )
    return flavor


def _quota_rows(queue: Queue, flavors: list[dict[str, Any]]) -> list[FlavorQuota]:
    """Check every quota row before anything is saved; errors name the row's flavor."""
    rows, seen, errors = [], set(), []
    for position, entry in enumerate(flavors):
        entry = dict(entry)
        flavor = entry.pop("flavor", None)
        if isinstance(flavor, str):
            flavor = ResourceFlavor.objects.filter(name=flavor).first() or flavor
        if not isinstance(flavor, ResourceFlavor):
            errors.append(f"No resource flavor named {flavor!r}.")
            continue
        if flavor.pk in seen:
            errors.append(f"Flavor {flavor.name} is listed twice.")
            continue
        seen.add(flavor.pk)
        unknown = set(entry) - set(QUOTA_FIELDS)
        if unknown:
            errors.append(f"Unknown quota field(s): {', '.join(sorted(unknown))}.")
            continue
        row = FlavorQuota(queue=queue, flavor=flavor, position=position, **entry)
        try:
            row.full_clean(exclude=["queue"], validate_unique=False)
        except ValidationError as exc:
            errors.extend(
                f"{flavor.name}: {field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
            )
        rows.append(row)
    if not rows and not errors:
        errors.append("Give the queue a quota in at least one flavor.")
    if not queue.cohort and any(
        r.gpu_borrowing_limit is not None or r.gpu_lending_limit is not None for r in rows
    ):
        errors.append("Borrowing and lending limits need a cohort to borrow from and lend to.")
    if errors:
        raise ValidationError({"flavors": errors})
    return rows


def _shorthand(fields: dict[str, Any]) -> list[dict[str, Any]] | None:
    given = {SHORTHAND[k]: fields.pop(k) for k in list(fields) if k in SHORTHAND}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    return [{"flavor": default_flavor(), **given}]


def queue_create(*, flavors: list[dict[str, Any]] | None = None, **fields: Any) -> Queue:
    """A queue with its quotas: `flavors=[{"flavor": "h100", "gpus": 8, ...}]`, or the shorthand
    gpu_quota/cpu_quota/memory_quota_gib for one quota on the default flavor."""
    shorthand = _shorthand(fields)
    queue = Queue(**fields)
    queue.full_clean()
    rows = _quota_rows(queue, flavors if flavors is not None else shorthand or [])
    with transaction.atomic():
        queue.save()
        for row in rows:
            row.queue = queue
            row.save()
        transaction.on_commit(lambda: _enqueue_apply(queue.id))
    return queue


def queue_update(*, queue: Queue, flavors: list[dict[str, Any]] | None = None, **fields: Any) -> Queue:
    shorthand = _shorthand(fields)
    fields.pop("name", None)  # the name is the Kueue objects' name: fixed once created
    for name, value in fields.items():
        setattr(queue, name, value)
    queue.full_clean()
    wanted = flavors if flavors is not None else shorthand
    rows = _quota_rows(queue, wanted) if wanted is not None else None
    with transaction.atomic():
        queue.save()
        if rows is not None:
            queue.quotas.all().delete()
            for row in rows:
                row.save()
        transaction.on_commit(lambda: _enqueue_apply(queue.id))
    return queue


def flavor_create(**fields: Any) -> ResourceFlavor:
    flavor = ResourceFlavor(**fields)
    flavor.full_clean()
    flavor.save()
    return flavor


def _enqueue_apply(queue_id: int) -> None:
    from queues.tasks import apply_queue

    apply_queue.delay(queue_id)


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))
