from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console.api import ModelValidatedSerializer
from console.audit import audit_context
from datasets.models import Dataset
from deploy.render import objects_to_yaml, render_service
from queues.models import PriorityClass, Queue, Team
from services.access import access_info
from services.actions import SPEC_FIELDS, service_check, service_create, service_delete, service_update
from services.auth_policy import param_names
from services.logs import PodNotFound, service_pod_log
from services.models import InferenceService, ServiceEvent
from services.selectors import service_events, service_list, services_visible_to
from services.spec import service_spec


class EnvVarSerializer(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.CharField(allow_blank=True)


class NodeRuleSerializer(serializers.Serializer):
    key = serializers.CharField()
    operator = serializers.ChoiceField(["In", "NotIn", "Exists", "DoesNotExist"], default="In")
    values = serializers.ListField(child=serializers.CharField(), default=list)


class TolerationSerializer(serializers.Serializer):
    key = serializers.CharField(allow_blank=True, default="")
    operator = serializers.ChoiceField(["Equal", "Exists"], default="Equal")
    value = serializers.CharField(allow_blank=True, default="")
    effect = serializers.ChoiceField(["", "NoSchedule", "PreferNoSchedule", "NoExecute"], default="")


class AuthParamSerializer(serializers.Serializer):
    """One extra parameter callers must send. The value is write-only: reads say `value_set`."""

    # "in" is a Python keyword: the field is named in_ and published as "in".
    in_ = serializers.ChoiceField(["header", "query"])
    name = serializers.CharField()
    value = serializers.CharField(
        write_only=True, required=False, help_text="Stored encrypted; empty keeps the stored value."
    )
    value_set = serializers.BooleanField(read_only=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["in"] = fields.pop("in_")
        return fields


@extend_schema_field(AuthParamSerializer(many=True))
class AuthParamsField(serializers.Field):
    """`auth_params`: written as [{"in", "name", "value"}], read back as names with `value_set`
    (values are never returned). The checks are the action's (services.auth_policy)."""

    def __init__(self, **kwargs):
        super().__init__(source="*", required=False, **kwargs)

    def to_representation(self, service: InferenceService) -> list[dict]:
        return param_names(service.auth_params_encrypted)

    def to_internal_value(self, data) -> dict:
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise serializers.ValidationError('Give a list of {"in": "header" or "query", "name", "value"}.')
        return {"auth_params": data}


class StatusSerializer(serializers.Serializer):
    phase = serializers.CharField()
    reason = serializers.CharField()
    message = serializers.CharField()
    ready_replicas = serializers.IntegerField()
    applied_revision = serializers.CharField()
    observed_at = serializers.DateTimeField(allow_null=True)


# An extra parameter the policy requires, by name (spelled like `auth_params`: `in` is a keyword).
AccessParamSerializer = type(
    "AccessParamSerializer",
    (serializers.Serializer,),
    {"in": serializers.ChoiceField(["header", "query"]), "name": serializers.CharField()},
)


class AccessSerializer(serializers.Serializer):
    """How to call the service: through the gateway (what users call) and, for reference, inside
    the cluster (reachable from the gateway only)."""

    gateway_url = serializers.CharField()
    health_url = serializers.CharField()
    requires_key = serializers.BooleanField()
    key_header = serializers.CharField(help_text="e.g. `Authorization: Bearer $INFERENCE_KEY`; empty: none")
    params = AccessParamSerializer(many=True, help_text="extra headers or query parameters it requires")
    internal_url = serializers.CharField()
    grpc_address = serializers.CharField()
    grpc_gateway = serializers.CharField()


class ServiceSerializer(ModelValidatedSerializer):
    """A service: its desired spec (writable on create) and its status (read-only)."""

    queue = serializers.SlugRelatedField(slug_field="name", queryset=Queue.objects.all())
    dataset = serializers.SlugRelatedField(slug_field="name", queryset=Dataset.objects.all())
    team = serializers.SlugRelatedField(
        slug_field="name", queryset=Team.objects.all(), required=False, allow_null=True
    )
    priority_class = serializers.SlugRelatedField(
        slug_field="name", queryset=PriorityClass.objects.all(), required=False, allow_null=True
    )
    env = EnvVarSerializer(many=True, required=False)
    node_rules = NodeRuleSerializer(many=True, required=False)
    tolerations = TolerationSerializer(many=True, required=False)
    allowed_cidrs = serializers.ListField(
        child=serializers.CharField(), required=False, help_text='e.g. ["10.0.0.0/8"]; empty: anywhere.'
    )
    auth_params = AuthParamsField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    status = serializers.SerializerMethodField()
    access = serializers.SerializerMethodField()

    class Meta:
        model = InferenceService
        fields = (
            "id",
            "uid",
            *SPEC_FIELDS,
            "auth_params",
            "namespace",
            "owner",
            "status",
            "access",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("namespace",)
        # Uniqueness of live names is checked by the action, with the message the form shows.
        validators = []

    # Plain dicts, not nested serializers per row: building two serializers for each of 100 rows
    # was most of the list's time (bench/services_list.py). The schema still documents them.
    @extend_schema_field(StatusSerializer)
    def get_status(self, obj: InferenceService) -> dict:
        return {
            "phase": obj.phase,
            "reason": obj.reason,
            "message": obj.message,
            "ready_replicas": obj.ready_replicas,
            "applied_revision": obj.applied_revision,
            "observed_at": obj.observed_at.isoformat().replace("+00:00", "Z") if obj.observed_at else None,
        }

    @extend_schema_field(AccessSerializer)
    def get_access(self, obj: InferenceService) -> dict:
        access = access_info(obj)
        return {
            "gateway_url": access.gateway_url,
            "health_url": access.health_url,
            "requires_key": access.requires_key,
            "key_header": access.key_header,
            "params": [{"in": p.location, "name": p.name} for p in access.params],
            "internal_url": access.internal_url,
            "grpc_address": access.grpc_address,
            "grpc_gateway": access.grpc_gateway,
        }


class AdmissionCheckSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(["admit", "queue", "refuse"])
    field = serializers.CharField()
    message = serializers.CharField()
    flavor = serializers.CharField()
    holds = serializers.CharField()
    position = serializers.IntegerField(allow_null=True)
    flavors = serializers.ListField(child=serializers.DictField())


class ServiceUpdateSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(min_value=0, required=False)
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)
    auth_policy = serializers.ChoiceField(InferenceService.AuthPolicy.choices, required=False)
    auth_header = serializers.CharField(required=False)
    allowed_cidrs = serializers.ListField(child=serializers.CharField(), required=False)
    auth_params = AuthParamsField()


class PodLogSerializer(serializers.Serializer):
    pod = serializers.CharField()
    previous = serializers.BooleanField()
    text = serializers.CharField()
    error = serializers.CharField()


class ServiceEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ServiceEvent
        fields = ("created_at", "kind", "phase", "reason", "message", "actor")


@extend_schema(
    parameters=[
        OpenApiParameter("phase", str, description="Only services in this phase."),
        OpenApiParameter("queue", str, description="Only services in this queue (name)."),
        OpenApiParameter("runtime", str, enum=["vllm", "triton"]),
        OpenApiParameter("name", str, description="Name contains this text."),
    ]
)
class ServiceViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Inference services. Create validates exactly like the form; delete is asynchronous (202)."""

    serializer_class = ServiceSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return InferenceService.objects.none()
        if self.action != "list":
            return services_visible_to(self.request.user)
        params = self.request.query_params
        return service_list(
            user=self.request.user,
            phase=params.get("phase", ""),
            queue=params.get("queue", ""),
            runtime=params.get("runtime", ""),
            search=params.get("name", ""),
        )

    def perform_create(self, serializer):
        serializer.instance = service_create(
            owner=self.request.user,
            context=audit_context(self.request, via="api"),
            **serializer.validated_data,
        )

    @extend_schema(request=ServiceSerializer, responses={200: AdmissionCheckSerializer})
    @action(detail=False, methods=["post"])
    def check(self, request):
        """The pre-submit check: would this service be admitted now, wait in the queue (and at
        which position), or be refused, and what it would hold. Creates nothing."""
        serializer = ServiceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(service_check(owner=request.user, **serializer.validated_data))

    @extend_schema(request=ServiceUpdateSerializer, responses=ServiceSerializer)
    def partial_update(self, request, pk=None):
        service = self.get_object()
        update = ServiceUpdateSerializer(data=request.data)
        update.is_valid(raise_exception=True)
        service = service_update(
            service=service,
            actor=request.user,
            context=audit_context(request, via="api"),
            **update.validated_data,
        )
        return Response(ServiceSerializer(service).data)

    @extend_schema(responses={202: ServiceSerializer})
    def destroy(self, request, pk=None):
        service = self.get_object()
        service_delete(service=service, actor=request.user, context=audit_context(request, via="api"))
        service.refresh_from_db()
        return Response(ServiceSerializer(service).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: dict})
    @action(detail=True)
    def manifests(self, request, pk=None):
        """The Kubernetes objects rendered from the current spec (JSON, and YAML as text)."""
        service = self.get_object()
        objects = render_service(service_spec(service))
        return Response({"objects": objects, "yaml": objects_to_yaml(objects)})

    @extend_schema(responses=ServiceEventSerializer(many=True))
    @action(detail=True)
    def events(self, request, pk=None):
        service = get_object_or_404(services_visible_to(request.user), pk=pk)
        return Response(ServiceEventSerializer(service_events(service=service), many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("pod", str, description="Pod name; default: the first pod."),
            OpenApiParameter("previous", bool, description="The previous (crashed) container's log."),
        ],
        responses=PodLogSerializer,
    )
    @action(detail=True)
    def logs(self, request, pk=None):
        """The log of one of the service's pods, current or previous."""
        service = self.get_object()
        previous = request.query_params.get("previous", "").lower() in {"1", "true", "yes"}
        try:
            log = service_pod_log(service=service, pod=request.query_params.get("pod", ""), previous=previous)
        except PodNotFound as exc:
            raise serializers.ValidationError({"pod": [str(exc)]}) from None
        return Response(PodLogSerializer(log).data)
