"""The usage and audit pages: what a user and an admin see, the CSV export, GPU-hours."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from auth.models import InferenceKey, UsageHour
from console.audit import AuditContext, audit_record
from console.usage import gpu_hours_by
from services import phases
from services.actions import service_create
from services.models import ServiceEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def services(user, bob, queue, dataset):
    mine = service_create(owner=user, name="alice-chat", queue=queue, dataset=dataset, model_path="m")
    theirs = service_create(owner=bob, name="bob-chat", queue=queue, dataset=dataset, model_path="m")
    return mine, theirs


def _hour(hours_ago: int):
    return (timezone.now() - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def usage(user, bob, services):
    """Roll-up rows as the gateway's metering task writes them."""
    mine, theirs = services
    key = InferenceKey.objects.create(user=user, name="frontend", prefix="aaaaaaaaaaaa", digest="x")
    UsageHour.objects.create(
        hour=_hour(1), key=key, service=mine, requests=10, errors_4xx=2, errors_5xx=1,
        prompt_tokens=100, completion_tokens=300, latency_ms_total=500,
    )  # fmt: skip
    UsageHour.objects.create(
        hour=_hour(2), key=key, service=mine, requests=5, prompt_tokens=50, completion_tokens=50,
        latency_ms_total=100,
    )  # fmt: skip
    UsageHour.objects.create(hour=_hour(1), service=theirs, requests=7, prompt_tokens=1, completion_tokens=1)
    UsageHour.objects.create(hour=_hour(24 * 10), service=mine, requests=1000)  # outside 24h and 7d
    return key


def test_a_user_sees_the_usage_of_their_services_only(client, user, usage):
    client.force_login(user)
    page = client.get("/usage/?period=24h&group=service").content.decode()
    assert "alice-chat" in page and "bob-chat" not in page
    rows = list(csv.reader(io.StringIO(client.get("/usage.csv?period=24h&group=service").content.decode())))
    assert rows[0][:6] == [
        "service",
        "requests",
        "errors_4xx",
        "errors_5xx",
        "prompt_tokens",
        "completion_tokens",
    ]
    assert rows[1][:6] == ["alice-chat", "15", "2", "1", "150", "350"]
    assert rows[1][6] == "40.0"  # (500 + 100) ms over 15 requests
    assert len(rows) == 2
    # The month-old hour is in the 30-day view only.
    month = list(csv.reader(io.StringIO(client.get("/usage.csv?period=30d").content.decode())))
    assert month[1][1] == "1015"


def test_an_admin_sees_everything_by_key_and_by_team(client, admin_user, usage):
    client.force_login(admin_user)
    by_service = client.get("/usage/?group=service").content.decode()
    assert "alice-chat" in by_service and "bob-chat" in by_service
    by_key = list(csv.reader(io.StringIO(client.get("/usage.csv?group=key").content.decode())))
    labels = {row[0]: row[1] for row in by_key[1:]}
    assert labels == {"frontend (aaaaaaaaaaaa…)": "15", "(no key: auth none)": "7"}
    assert by_key[0][-1] == "gpu_hours" and by_key[1][-1] == ""  # GPU-hours are per service or team
    by_team = client.get("/usage/?group=team").content.decode()
    assert "(no team)" in by_team


def test_charts_are_drawn_from_the_hourly_rows(client, user, usage):
    client.force_login(user)
    page = client.get("/usage/?period=24h").content.decode()
    assert page.count('<svg class="chart"') == 2
    # Two hours with traffic in the user's view: two bars per chart, with their values.
    assert page.count("<rect ") == 4
    assert "10 requests" in page and "400 tokens" in page


def test_gpu_hours_count_the_time_in_running(user, admin_user, services):
    mine, _ = services
    now = timezone.now()
    mine.gpu_count, mine.replicas = 2, 2
    mine.save(update_fields=["gpu_count", "replicas"])
    events = [
        (now - timedelta(hours=30), phases.RUNNING),  # before the window: counts from its start
        (now - timedelta(hours=20), phases.FAILED),
        (now - timedelta(hours=3), phases.RUNNING),  # still running: counts until now
    ]
    for at, phase in events:
        event = ServiceEvent.objects.create(service=mine, kind=ServiceEvent.Kind.PHASE, phase=phase)
        ServiceEvent.objects.filter(id=event.id).update(created_at=at)
    hours = gpu_hours_by(user=user, group="service", since=now - timedelta(hours=24), now=now)
    # (4 h + 3 h) x 4 GPUs; bob's service is not in alice's view.
    assert hours == {mine.id: pytest.approx(28.0, abs=0.01)}


def test_the_audit_log_shows_a_user_their_own_actions(client, user, bob, admin_user, services):
    mine, theirs = services
    audit_record(context=AuditContext(actor=user, remote_addr="127.0.0.1", via="web"), action="update",
                 obj=mine, object_type="service", changes={"replicas": [1, 2]})  # fmt: skip
    audit_record(
        context=AuditContext(actor=bob, via="api"), action="delete", obj=theirs, object_type="service"
    )
    client.force_login(user)
    page = client.get("/audit/").content.decode()
    assert "alice-chat" in page and "replicas" in page and "127.0.0.1" in page
    assert "bob-chat" not in page
    client.force_login(admin_user)
    page = client.get("/audit/?action=delete").content.decode()
    assert "bob-chat" in page and "alice-chat" not in page


def test_quotas_show_teams_and_queues_used_against_their_limits(
    client, user, bob, admin_user, queue, services
):
    from queues.models import Team

    mine, _ = services
    team = Team.objects.create(name="research", max_gpus=4, max_services=3)
    team.members.add(user)
    Team.objects.create(name="other", max_gpus=2)
    mine.team = team
    mine.gpu_count = 2
    mine.phase = phases.RUNNING
    mine.save(update_fields=["team", "gpu_count", "phase"])
    client.force_login(user)
    page = client.get("/quotas/").content.decode()
    assert "research" in page and "other" not in page  # only the user's teams
    assert "2 / 4" in page and "1 / 3" in page
    assert f"3 / {queue.gpu_quota}" in page  # 2 of alice's and 1 of bob's (Pending holds quota too)
    client.force_login(admin_user)
    page = client.get("/quotas/").content.decode()
    assert "research" in page and "other" in page
