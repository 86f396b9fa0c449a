"""The usage and audit pages of the dashboard. Staff see everything; other users see the usage of
their own services and the audit entries of their own actions."""

from __future__ import annotations

import csv

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from console.charts import bar_chart
from console.models import AuditEvent
from console.usage import GROUPS, PERIODS, usage_rows, usage_series
from queues.models import Team
from queues.selectors import queues_with_usage, team_state


def _choices(request: HttpRequest) -> tuple[str, str]:
    period = request.GET.get("period", "24h")
    group = request.GET.get("group", "service")
    return (period if period in PERIODS else "24h"), (group if group in GROUPS else "service")


@login_required
def usage_view(request: HttpRequest) -> HttpResponse:
    period, group = _choices(request)
    now = timezone.now()
    since = now - PERIODS[period]
    series = usage_series(user=request.user, since=since)
    hour_label = "%m-%d %H:00"
    return render(
        request,
        "dashboard/usage.html",
        {
            "rows": usage_rows(user=request.user, group=group, since=since, now=now),
            "period": period,
            "group": group,
            "periods": list(PERIODS),
            "groups": GROUPS,
            "requests_chart": bar_chart(
                [(at.strftime(hour_label), requests) for at, requests, _ in series],
                title="Requests per hour",
                unit="requests",
            ),
            "tokens_chart": bar_chart(
                [(at.strftime(hour_label), tokens) for at, _, tokens in series],
                title="Tokens per hour",
                unit="tokens",
            ),
        },
    )


@login_required
def usage_csv_view(request: HttpRequest) -> HttpResponse:
    period, group = _choices(request)
    now = timezone.now()
    rows = usage_rows(user=request.user, group=group, since=now - PERIODS[period], now=now)
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{group}-{period}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [group, "requests", "errors_4xx", "errors_5xx", "prompt_tokens", "completion_tokens",
         "mean_latency_ms", "gpu_hours"]
    )  # fmt: skip
    for row in rows:
        writer.writerow(
            [
                row.label,
                row.requests,
                row.errors_4xx,
                row.errors_5xx,
                row.prompt_tokens,
                row.completion_tokens,
                "" if row.mean_latency_ms is None else f"{row.mean_latency_ms:.1f}",
                "" if row.gpu_hours is None else f"{row.gpu_hours:.3f}",
            ]
        )
    return response


@login_required
def audit_view(request: HttpRequest) -> HttpResponse:
    visible = AuditEvent.objects.all()
    if not request.user.is_staff:
        visible = visible.filter(actor=request.user)
    events = visible
    filters = {key: request.GET.get(key, "") for key in ("object_type", "action", "actor")}
    if filters["object_type"]:
        events = events.filter(object_type=filters["object_type"])
    if filters["action"]:
        events = events.filter(action=filters["action"])
    if filters["actor"] and request.user.is_staff:
        events = events.filter(actor_name=filters["actor"])
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/audit.html",
        {
            "page": page,
            "filters": filters,
            "object_types": visible.values_list("object_type", flat=True).distinct().order_by("object_type"),
            "actions": visible.values_list("action", flat=True).distinct().order_by("action"),
        },
    )


@login_required
def quotas_view(request: HttpRequest) -> HttpResponse:
    """Used against limit for every team (a user: their teams) and every queue."""
    teams = Team.objects.all() if request.user.is_staff else request.user.teams.all()
    return render(
        request,
        "dashboard/quotas.html",
        {"teams": [team_state(team) for team in teams.order_by("name")], "queues": queues_with_usage()},
    )
