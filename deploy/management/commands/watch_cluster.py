import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection

from datasets.prewarm import sync_running_prewarms
from deploy.clusters import ClusterError, get_cluster
from deploy.sync import observe_by_name

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Follow the cluster's watch streams and record what it reports about each service and prewarm."

    def handle(self, *args, **options):
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        cluster = get_cluster()
        self.stderr.write(f"Watching {cluster.display_name}.")
        prewarms = threading.Thread(target=follow_prewarms, args=(stopping,), name="prewarms", daemon=True)
        prewarms.start()

        def on_change(namespace: str, name: str) -> None:
            close_old_connections()
            try:
                observe_by_name(namespace, name)
            except ClusterError as exc:
                log.warning("observe %s/%s failed: %s", namespace, name, exc)

        backoff = 1.0
        while not stopping.is_set():
            try:
                cluster.watch(on_change, stopping.is_set)
                backoff = 1.0
            except ClusterError as exc:
                log.warning("watch failed, retrying in %.0fs: %s", backoff, exc)
                stopping.wait(backoff)
                backoff = min(backoff * 2, 60)
        prewarms.join(timeout=10)


def follow_prewarms(stopping: threading.Event) -> None:
    """Progress lines do not change any object, so no watch event announces them: poll the
    logs of running prewarm jobs instead (a handful at a time, once a second)."""
    try:
        while not stopping.wait(settings.PREWARM_POLL_SECONDS):
            close_old_connections()
            try:
                sync_running_prewarms()
            except Exception:  # keep following; the next poll tries again
                log.exception("following prewarms failed")
    finally:
        connection.close()
