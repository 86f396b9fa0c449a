from rest_framework import serializers, viewsets

from console.api import IsStaffOrReadOnly
from queues.actions import QUEUE_FIELDS, queue_create, queue_update
from queues.models import Queue
from queues.selectors import queues_with_usage


class QueueSerializer(serializers.ModelSerializer):
    gpus_used = serializers.IntegerField(read_only=True, default=0)
    services_live = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Queue
        fields = ("id", *QUEUE_FIELDS, "gpus_used", "services_live", "created_at")


class QueueViewSet(viewsets.ModelViewSet):
    """Queues and their quotas. Everyone reads; staff create, change and delete."""

    serializer_class = QueueSerializer
    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "name"

    def get_queryset(self):
        return queues_with_usage()

    def perform_create(self, serializer):
        serializer.instance = queue_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = queue_update(queue=serializer.instance, **serializer.validated_data)
