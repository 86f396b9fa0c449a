"""The running console's moving parts as fixtures: a real Celery worker on Redis, the watcher,
and the simulated cluster with short delays. Used by the integration and browser tiers."""

import threading
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from console.celery import app as celery_app
from deploy import clusters
from deploy.clusters import get_cluster
from deploy.clusters.simulated import standins
from deploy.management.commands.watch_cluster import follow_prewarms
from deploy.sync import observe_by_name


@pytest.fixture(scope="session")
def _require_real_parts():
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("the integration tier runs on PostgreSQL: set DATABASE_URL (./run-tests does)")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.fail("the integration tier runs on Redis: set REDIS_URL (./run-tests does)")


@pytest.fixture
def fast_cluster(settings, tmp_path):
    """The simulated cluster with short image-pull and model-load times."""
    settings.SIMULATED_PULL_SECONDS = 0.5
    settings.SIMULATED_LOAD_SECONDS = 1.0
    settings.WATCH_POLL_SECONDS = 0.2
    settings.SIMULATED_CLUSTER_FAULTS = str(tmp_path / "faults.json")
    settings.SIMULATED_STATE_DIR = str(tmp_path / "simulated")
    settings.PREWARM_POLL_SECONDS = 0.2
    clusters._cluster_for.cache_clear()
    cluster = get_cluster()
    yield cluster
    # The stand-in servers of Running services outlive processes by design: stop this test's.
    standins.sync_all(cluster.state, {})
    clusters._cluster_for.cache_clear()


@pytest.fixture
def celery_worker(_require_real_parts, transactional_db, fast_cluster):
    """A real worker consuming from Redis in a thread of this process."""
    celery_app.conf.task_always_eager = False
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING") as worker:
        yield worker


@pytest.fixture
def watcher(celery_worker, fast_cluster):
    """The same loop `manage.py watch_cluster` runs, in a thread."""
    stop = threading.Event()

    def run() -> None:
        try:
            fast_cluster.watch(observe_by_name, stop.is_set)
        finally:
            connection.close()  # this thread's own connection: let the test database be dropped

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    prewarms = threading.Thread(target=follow_prewarms, args=(stop,), daemon=True)
    prewarms.start()
    yield
    stop.set()
    thread.join(timeout=10)
    prewarms.join(timeout=10)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def wait_until(read, done, *, timeout: float = 45.0, what: str):
    """Poll read() until done(value) and return the value; at the deadline fail showing the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last seen: {value!r}")
        time.sleep(0.25)
