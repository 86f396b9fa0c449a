"""REST API plumbing shared by every app."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Model and action validation errors become 400s keyed by field, like serializer errors."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {
                ("non_field_errors" if field == "__all__" else field): messages
                for field, messages in exc.message_dict.items()
            }
        else:
            detail = {"non_field_errors": exc.messages}
        exc = ValidationError(detail)
    return drf_exception_handler(exc, context)


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return bool(request.user and request.user.is_staff)


class ModelValidatedSerializer(serializers.ModelSerializer):
    """A ModelSerializer that only coerces types and leaves value checks to the model.

    The model's validators and `clean()` run in the action (full_clean), so the API reports
    exactly the messages the form shows, on the same field names.
    """

    VALUE_CHECKS = ("validators", "max_length", "min_length", "min_value", "max_value")

    def build_standard_field(self, field_name, model_field):
        field_class, field_kwargs = super().build_standard_field(field_name, model_field)
        for key in self.VALUE_CHECKS:
            field_kwargs.pop(key, None)
        return field_class, field_kwargs
