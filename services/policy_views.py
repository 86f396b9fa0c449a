"""The page that changes a service's auth policy at the gateway (no redeploy)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from console.audit import audit_context
from services.actions import service_update
from services.forms import AuthPolicyForm
from services.selectors import services_visible_to


@login_required
def service_policy_view(request: HttpRequest, pk: int) -> HttpResponse:
    service = get_object_or_404(services_visible_to(request.user), pk=pk)
    form = AuthPolicyForm.for_service(service, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            service_update(
                service=service,
                actor=request.user,
                context=audit_context(request, via="web"),
                **form.cleaned_data,
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(
                request, f"Auth policy of {service.name} saved; the gateway applies it within a second."
            )
            return redirect("services:detail", pk=service.pk)
    return render(request, "services/policy.html", {"service": service, "form": form})
