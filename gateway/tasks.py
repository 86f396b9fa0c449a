from celery import shared_task

from gateway import conf


@shared_task(ignore_result=True)
def rollup_usage() -> int:
    """Roll the gateway's usage stream up into UsageHour rows (beat runs it every 15 s). Without
    Redis the gateway writes usage itself and there is nothing to do."""
    if not conf.redis_url():
        return 0
    from gateway.rollup import rollup_usage as run

    return run()
