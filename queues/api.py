from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console.api import IsStaffOrReadOnly, ModelValidatedSerializer
from queues.actions import (
    QUEUE_FIELDS,
    QUOTA_FIELDS,
    flavor_create,
    flavor_update,
    queue_create,
    queue_update,
)
from queues.models import FlavorQuota, Queue, ResourceFlavor
from queues.selectors import queue_workloads, queues_with_usage, usage_by_flavor


class FlavorSerializer(ModelValidatedSerializer):
    class Meta:
        model = ResourceFlavor
        fields = ("id", "name", "description", "node_labels", "tolerations", "node_taints", "created_at")

    def validate_name(self, value: str) -> str:
        if self.instance is not None and value != self.instance.name:
            raise serializers.ValidationError("Fixed once created: it names the Kueue ResourceFlavor.")
        return value


class FlavorQuotaSerializer(serializers.ModelSerializer):
    flavor = serializers.SlugRelatedField(slug_field="name", queryset=ResourceFlavor.objects.all())

    class Meta:
        model = FlavorQuota
        fields = ("flavor", *QUOTA_FIELDS)


class QueueSerializer(ModelValidatedSerializer):
    flavors = FlavorQuotaSerializer(many=True, source="quotas", required=False)
    # Shorthand for a simple queue: one quota on the default flavor (every node).
    gpu_quota = serializers.IntegerField(min_value=0, required=False)
    cpu_quota = serializers.DecimalField(
        max_digits=8, decimal_places=1, min_value=0, required=False, write_only=True
    )
    memory_quota_gib = serializers.IntegerField(min_value=0, required=False, write_only=True)
    gpus_used = serializers.IntegerField(read_only=True, default=0)
    services_live = serializers.IntegerField(read_only=True, default=0)
    services_queued = serializers.IntegerField(read_only=True, default=0)
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Queue
        fields = (
            "id", *QUEUE_FIELDS, "flavors", "gpu_quota", "cpu_quota", "memory_quota_gib", "gpus_used",
            "services_live", "services_queued", "usage", "created_at",
        )  # fmt: skip

    def get_usage(self, queue: Queue) -> list[dict]:
        """Per flavor: quota and what admitted services hold."""
        usage = self.context.get("usage")
        if usage is None:
            usage = usage_by_flavor([queue.id])
        rows = []
        for quota in queue.quotas.all():
            used, services = usage.get((queue.id, quota.flavor_id), (None, 0))
            rows.append(
                {
                    "flavor": quota.flavor.name,
                    "gpus": {"quota": quota.gpus, "used": used.gpu if used else 0},
                    "cpu": {"quota": float(quota.cpu), "used": (used.cpu_milli / 1000) if used else 0},
                    "memory_gib": {
                        "quota": quota.memory_gib,
                        "used": round(used.memory / 2**30, 1) if used else 0,
                    },
                    "services": services,
                }
            )
        return rows

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "quotas" in values:
            values["flavors"] = [
                {"flavor": row["flavor"], **{k: v for k, v in row.items() if k != "flavor"}}
                for row in values.pop("quotas")
            ]
        return values


class QueueViewSet(viewsets.ModelViewSet):
    """Queues (Kueue ClusterQueue + LocalQueue) with their quota per flavor and live usage.
    Everyone reads; staff create, change and delete. `gpu_quota`/`cpu_quota`/`memory_quota_gib`
    create a simple queue with one quota on the default flavor."""

    serializer_class = QueueSerializer
    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "name"

    def get_queryset(self):
        return queues_with_usage()

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action == "list":
            context["usage"] = usage_by_flavor(Queue.objects.values_list("id", flat=True))
        return context

    def perform_create(self, serializer):
        serializer.instance = queue_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = queue_update(queue=serializer.instance, **serializer.validated_data)

    @extend_schema(responses={200: dict})
    @action(detail=True)
    def workloads(self, request, name=None):
        """The queue's services in admission order: admitted ones, then the waiting ones with
        their position and what blocks them."""
        return Response(queue_workloads(self.get_object()))


class FlavorViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Resource flavors: kinds of nodes (node labels, node taints, tolerations). Staff create and
    change them (PUT/PATCH; the name is fixed); a change re-applies the Kueue objects of every
    queue with a quota in the flavor."""

    serializer_class = FlavorSerializer
    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "name"
    queryset = ResourceFlavor.objects.order_by("name")

    def perform_create(self, serializer):
        serializer.instance = flavor_create(**serializer.validated_data)

    def perform_update(self, serializer):
        fields = {k: v for k, v in serializer.validated_data.items() if k != "name"}
        serializer.instance = flavor_update(flavor=serializer.instance, **fields)
