"""Pages for inference keys: list, create (plaintext shown once), detail with audit rows, rotate,
revoke. A user reaches only their own keys (any other is a 404); staff reach all."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from auth.forms import InferenceKeyForm, RotateForm
from auth.key_actions import inference_key_create, inference_key_revoke, inference_key_rotate
from auth.key_rules import STATES
from auth.key_selectors import USAGE_DAYS, key_audit_events, key_list, key_usage_by_service, keys_visible_to
from auth.models import InferenceKey
from console.audit import audit_context
from services.selectors import services_visible_to


@login_required
def key_list_view(request: HttpRequest) -> HttpResponse:
    filters = {name: request.GET.get(name, "") for name in ("service", "state", "user")}
    if filters["state"] not in STATES:
        filters["state"] = ""
    if not request.user.is_staff:
        filters["user"] = ""
    rows = key_list(
        user=request.user, service=filters["service"], state=filters["state"], owner=filters["user"]
    )
    return render(
        request,
        "access/keys.html",
        {
            "page": Paginator(rows, 25).get_page(request.GET.get("page")),
            "filters": filters,
            "states": STATES,
            "usage_days": USAGE_DAYS,
            "services": services_visible_to(request.user).order_by("name").values_list("name", flat=True),
        },
    )


def _show_once(request: HttpRequest, key: InferenceKey, plaintext: str, *, note: str) -> HttpResponse:
    # The plaintext is in this one response only. The page replaces its URL with the key's
    # detail URL, so reloading shows the detail (without it) instead of posting again.
    response = render(
        request,
        "access/key_detail.html",
        {**_detail_context(request, key.pk), "plaintext": plaintext, "note": note},
    )
    add_never_cache_headers(response)  # no cache or proxy on the way keeps the plaintext
    return response


@login_required
def key_create_view(request: HttpRequest) -> HttpResponse:
    form = InferenceKeyForm(request.POST or None, actor=request.user)
    if request.method == "POST" and form.is_valid():
        fields = dict(form.cleaned_data)
        owner = fields.pop("user", None) or request.user
        try:
            key, plaintext = inference_key_create(
                owner=owner, created_by=request.user, context=audit_context(request, via="web"), **fields
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _show_once(request, key, plaintext, note="New key")
    return render(request, "access/key_create.html", {"form": form})


def _get_key(request: HttpRequest, pk: int) -> InferenceKey:
    return get_object_or_404(keys_visible_to(request.user), pk=pk)


def _detail_context(request: HttpRequest, pk: int) -> dict:
    key = _get_key(request, pk)  # fresh: state, replaced_by
    return {
        "key": key,
        "services": sorted(key.services.all(), key=lambda s: s.name),
        "events": [(event, _readable(event.changes)) for event in key_audit_events(key=key)],
        "usage": key_usage_by_service(key=key),
        "usage_days": USAGE_DAYS,
        "rotate_form": RotateForm(),
        "detail_url": reverse("keys:detail", args=[key.pk]),
    }


def _readable(changes: dict) -> list[tuple[str, str, str]]:
    def text(value) -> str:
        if value is None or value == []:
            return "–"
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    return [(field, text(before), text(after)) for field, (before, after) in changes.items()]


@login_required
def key_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "access/key_detail.html", _detail_context(request, pk))


@login_required
@require_POST
def key_rotate_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = _get_key(request, pk)
    form = RotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect("keys:detail", pk=key.pk)
    try:
        new, plaintext = inference_key_rotate(
            key=key, grace_hours=form.cleaned_data["grace_hours"], context=audit_context(request, via="web")
        )
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("keys:detail", pk=key.pk)
    return _show_once(request, new, plaintext, note=f"Rotated from {key.prefix}")


@login_required
@require_POST
def key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = _get_key(request, pk)
    if inference_key_revoke(key=key, context=audit_context(request, via="web")):
        messages.success(request, f"Key {key.name} ({key.prefix}) revoked.")
    return redirect("keys:detail", pk=key.pk)
