from celery import shared_task
from django.utils import timezone

from auth.key_actions import inference_keys_disable_unused


@shared_task
def disable_unused_inference_keys() -> int:
    """Periodic (CELERY_BEAT_SCHEDULE): disable keys unused longer than the setting allows."""
    return inference_keys_disable_unused(now=timezone.now())
