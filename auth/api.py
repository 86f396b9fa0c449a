"""REST API for inference keys: /api/v1/keys/. A user sees and touches only their own keys (any
other is a 404); staff see all and may create keys for anyone. Plaintext keys appear only in the
responses of create and rotate, as `key`."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from auth.key_actions import (
    inference_key_create,
    inference_key_revoke,
    inference_key_rotate,
    inference_key_update,
)
from auth.key_rules import LIMIT_FIELDS, STATES
from auth.key_selectors import key_list, keys_visible_to
from auth.models import InferenceKey
from console.api import ModelValidatedSerializer
from console.audit import audit_context
from services import phases
from services.models import InferenceService
from services.selectors import services_visible_to

WRITABLE_FIELDS = ("name", "services", "expires_at", *LIMIT_FIELDS)


class ScopeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class InferenceKeySerializer(ModelValidatedSerializer):
    """A key as listed: never its secret. `services` takes service ids; `scope` names them."""

    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        help_text="Whose key it is (admins only; default: you).",
    )
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    services = serializers.PrimaryKeyRelatedField(
        many=True, queryset=InferenceService.objects.none(), help_text="Ids of the services the key may call."
    )
    scope = serializers.SerializerMethodField()
    state = serializers.ChoiceField(STATES, read_only=True)
    replaced_by = serializers.CharField(source="replaced_by.prefix", read_only=True, default=None)

    class Meta:
        model = InferenceKey
        fields = (
            "id", "name", "prefix", "user", "created_by", "services", "scope", "state", "created_at",
            "last_used_at", "expires_at", "revoked_at", "disabled_at", "replaced_by", *LIMIT_FIELDS,
        )  # fmt: skip
        read_only_fields = ("prefix", "created_at", "last_used_at", "revoked_at", "disabled_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            # Only services the caller can see: another user's service is "does not exist".
            self.fields["services"].child_relation.queryset = services_visible_to(request.user).exclude(
                phase=phases.DELETED
            )

    @extend_schema_field(ScopeSerializer(many=True))
    def get_scope(self, obj: InferenceKey) -> list[dict]:
        return [{"id": s.id, "name": s.name} for s in sorted(obj.services.all(), key=lambda s: s.name)]


class InferenceKeyUpdateSerializer(InferenceKeySerializer):
    user = serializers.CharField(source="user.username", read_only=True)  # a key never changes hands

    class Meta(InferenceKeySerializer.Meta):
        read_only_fields = tuple(f for f in InferenceKeySerializer.Meta.fields if f not in WRITABLE_FIELDS)


class NewInferenceKeySerializer(InferenceKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The plaintext key: shown this once, never again.")

    class Meta(InferenceKeySerializer.Meta):
        fields = (*InferenceKeySerializer.Meta.fields, "key")


class RotateSerializer(serializers.Serializer):
    grace_hours = serializers.IntegerField(
        required=False,
        help_text="How long the old key keeps working (0: stops at once). "
        "Default: INFERENCE_KEY_ROTATION_GRACE_HOURS.",
    )


def _shown_once(response: Response) -> Response:
    add_never_cache_headers(response)  # no cache or proxy on the way keeps the plaintext
    return response


def _with_plaintext(key: InferenceKey, plaintext: str, request) -> dict:
    data = NewInferenceKeySerializer(key, context={"request": request}).data
    data["key"] = plaintext
    return data


@extend_schema(
    parameters=[
        OpenApiParameter("service", str, description="Only keys scoped to this service (id or name)."),
        OpenApiParameter("state", str, enum=list(STATES)),
        OpenApiParameter("user", str, description="Only keys of this user (admins only)."),
    ]
)
class InferenceKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Inference keys for calling models through the gateway (not this API)."""

    serializer_class = InferenceKeySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return InferenceKey.objects.none()
        if self.action != "list":
            return keys_visible_to(self.request.user)
        params = self.request.query_params
        errors = {}
        state = params.get("state", "")
        if state and state not in STATES:
            errors["state"] = [f"Give one of: {', '.join(STATES)}."]
        owner = params.get("user", "")
        if owner and not self.request.user.is_staff:
            errors["user"] = ["Only admins may filter by user."]
        if errors:
            raise serializers.ValidationError(errors)
        return key_list(user=self.request.user, service=params.get("service", ""), state=state, owner=owner)

    @extend_schema(request=InferenceKeySerializer, responses={201: NewInferenceKeySerializer})
    def create(self, request):
        """Create a key; the response carries the plaintext as `key`, this once."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        key, plaintext = inference_key_create(
            owner=fields.pop("user", request.user),
            created_by=request.user,
            context=audit_context(request, via="api"),
            **fields,
        )
        return _shown_once(Response(_with_plaintext(key, plaintext, request), status=status.HTTP_201_CREATED))

    @extend_schema(request=InferenceKeyUpdateSerializer, responses=InferenceKeySerializer)
    def partial_update(self, request, pk=None):
        """Change name, scope (`services`), expiry or limits."""
        key = self.get_object()
        serializer = InferenceKeyUpdateSerializer(
            key, data=request.data, partial=True, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        key = inference_key_update(
            key=key, context=audit_context(request, via="api"), **serializer.validated_data
        )
        return Response(self.get_serializer(keys_visible_to(request.user).get(pk=key.pk)).data)

    @extend_schema(request=RotateSerializer, responses={201: NewInferenceKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """A new key with the same scope, expiry and limits (plaintext in `key`, this once); the old
        key keeps working for `grace_hours`."""
        key = self.get_object()
        serializer = RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grace = serializer.validated_data.get("grace_hours", settings.INFERENCE_KEY_ROTATION_GRACE_HOURS)
        new, plaintext = inference_key_rotate(
            key=key, grace_hours=grace, context=audit_context(request, via="api")
        )
        return _shown_once(Response(_with_plaintext(new, plaintext, request), status=status.HTTP_201_CREATED))

    @extend_schema(request=None, responses=InferenceKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the key (the gateway refuses it within a second). Revoking twice is harmless."""
        key = self.get_object()
        inference_key_revoke(key=key, context=audit_context(request, via="api"))
        return Response(self.get_serializer(keys_visible_to(request.user).get(pk=key.pk)).data)
