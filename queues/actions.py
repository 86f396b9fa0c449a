"""Every write to queues, flavors, priority classes and teams. Saving a queue or a flavor also
applies its Kueue objects, after commit, through the worker (queues.tasks)."""

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from queues.models import FlavorQuota, PriorityClass, Queue, ResourceFlavor
from queues.selectors import queues_depending_on

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
        reapply_queues(Queue.objects.filter(id=queue.id))
    queue.refresh_from_db(fields=["kueue_state", "kueue_message"])
    return queue


FLAVOR_FIELDS = ("name", "description", "node_labels", "tolerations", "node_taints")


def flavor_create(**fields: Any) -> ResourceFlavor:
    flavor = ResourceFlavor(**fields)
    flavor.full_clean()
    flavor.save()
    return flavor


def flavor_update(
    *,
    flavor: ResourceFlavor,
    description: str | None = None,
    node_labels: dict[str, str] | None = None,
    tolerations: list[dict] | None = None,
    node_taints: list[dict] | None = None,
) -> ResourceFlavor:
    """Change a flavor (None: keep that field; the name is fixed, it names the Kueue object) and
    re-apply the Kueue objects of every queue with a quota in it."""
    changes = {
        "description": description,
        "node_labels": node_labels,
        "tolerations": tolerations,
        "node_taints": node_taints,
    }
    for name, value in changes.items():
        if value is not None:
            setattr(flavor, name, value)
    flavor.full_clean()
    with transaction.atomic():
        flavor.save()
        reapply_queues(queues_depending_on(flavor=flavor))
    return flavor


def priority_class_create(*, name: str, value: int, description: str = "") -> PriorityClass:
    """A priority class, applied with every queue (each queue's objects carry them all)."""
    priority_class = PriorityClass(name=name, value=value, description=description)
    priority_class.full_clean()
    with transaction.atomic():
        priority_class.save()
        reapply_queues(Queue.objects.all())
    return priority_class


def priority_class_update(
    *, priority_class: PriorityClass, value: int | None = None, description: str | None = None
) -> PriorityClass:
    if value is not None:
        priority_class.value = value
    if description is not None:
        priority_class.description = description
    priority_class.full_clean()
    with transaction.atomic():
        priority_class.save()
        reapply_queues(Queue.objects.all())
    return priority_class


def reapply_queues(queues: Any) -> None:
    """Mark the queues' Kueue objects Pending and apply them after commit (one task per queue)."""
    ids = list(queues.values_list("id", flat=True))
    Queue.objects.filter(id__in=ids).update(
        kueue_state=Queue.KueueState.PENDING, kueue_message="Waiting for the worker to apply the change."
    )
    for queue_id in ids:
        transaction.on_commit(lambda queue_id=queue_id: _enqueue_apply(queue_id))


def _enqueue_apply(queue_id: int) -> None:
    from queues.tasks import apply_queue

    apply_queue.delay(queue_id)


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))
