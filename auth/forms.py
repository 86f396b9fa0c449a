"""Forms for inference keys. The rules about one key are the model's (`InferenceKey.clean`), run
by ModelForm validation here and by the action for the API."""

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from auth.key_rules import MAX_GRACE_HOURS
from auth.models import InferenceKey
from services import phases
from services.selectors import services_visible_to


class InferenceKeyForm(forms.ModelForm):
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        label="Owner",
        help_text="Admins may create keys for anyone; empty: you.",
    )

    class Meta:
        model = InferenceKey
        fields = ("name", "user", "services", "expires_at", "rpm_limit", "tpm_limit",
                  "daily_token_budget", "monthly_token_budget")  # fmt: skip
        widgets = {
            "expires_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
            "services": forms.SelectMultiple(attrs={"size": 6}),
        }

    def __init__(self, *args, actor: AbstractBaseUser, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].widget.attrs["placeholder"] = "chat-frontend"
        self.fields["services"].queryset = (
            services_visible_to(actor).exclude(phase=phases.DELETED).order_by("name")
        )
        self.fields["expires_at"].input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
        self.fields["expires_at"].help_text += " Time zone: UTC."
        if actor.is_staff:
            self.fields["user"].queryset = (
                get_user_model().objects.filter(is_active=True).order_by("username")
            )
        else:
            del self.fields["user"]


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        label="Old key keeps working for (hours)",
        min_value=0,
        max_value=MAX_GRACE_HOURS,
        initial=lambda: settings.INFERENCE_KEY_ROTATION_GRACE_HOURS,
        help_text="0: the old key stops at once.",
    )
