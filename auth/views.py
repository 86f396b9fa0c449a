from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from auth.actions import api_token_create, api_token_revoke
from auth.models import ApiToken
from console.audit import audit_context


@login_required
def token_list_view(request: HttpRequest) -> HttpResponse:
    created = None
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:100] or "unnamed"
        _token, created = api_token_create(
            user=request.user, name=name, context=audit_context(request, via="web")
        )
    response = render(
        request,
        "access/tokens.html",
        # The plaintext is in this one response only; it is never stored or shown again.
        {"tokens": ApiToken.objects.filter(user=request.user), "created_token": created},
    )
    add_never_cache_headers(response)
    return response


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    api_token_revoke(
        token=get_object_or_404(ApiToken, pk=pk, user=request.user), context=audit_context(request, via="web")
    )
    return redirect("access:tokens")
