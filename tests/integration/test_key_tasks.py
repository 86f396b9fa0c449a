"""The periodic key task on a real Celery worker: keys unused too long are disabled, with an
audit row, and the gateway is told after commit."""

from datetime import timedelta

from django.utils import timezone

from auth.key_actions import inference_key_create
from auth.models import InferenceKey
from auth.tasks import disable_unused_inference_keys
from console.audit import SYSTEM
from console.models import AuditEvent
from services.actions import service_create
from tests.stack import wait_for


def test_the_worker_disables_keys_unused_longer_than_the_setting(
    celery_worker, user, queue, dataset, settings
):
    settings.INFERENCE_KEY_DISABLE_AFTER_DAYS = 30
    service = service_create(owner=user, name="chat", queue=queue, dataset=dataset, model_path="m")
    stale, _ = inference_key_create(
        owner=user, created_by=user, name="stale", services=[service], context=SYSTEM
    )
    fresh, _ = inference_key_create(
        owner=user, created_by=user, name="fresh", services=[service], context=SYSTEM
    )
    InferenceKey.objects.filter(id=stale.id).update(last_used_at=timezone.now() - timedelta(days=31))

    disable_unused_inference_keys.delay()  # as beat sends it
    wait_for(lambda: InferenceKey.objects.get(id=stale.id).disabled_at, what="the stale key disabled")
    assert InferenceKey.objects.get(id=stale.id).state == "disabled"
    assert InferenceKey.objects.get(id=fresh.id).state == "active"
    assert AuditEvent.objects.get(action="disable").object_id == str(stale.id)
