from rest_framework import mixins, serializers, viewsets

from console.api import ModelValidatedSerializer
from datasets.actions import DATASET_FIELDS, dataset_create, dataset_delete
from datasets.models import Dataset


class DatasetSerializer(ModelValidatedSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Dataset
        fields = ("id", *DATASET_FIELDS, "location", "phase", "phase_message", "owner", "created_at")
        read_only_fields = ("location", "phase", "phase_message")


class DatasetViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Datasets hold model files (NFS, S3, a node path or a PVC); prewarm starts on create."""

    serializer_class = DatasetSerializer
    queryset = Dataset.objects.select_related("owner").order_by("name")
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = dataset_create(owner=self.request.user, **serializer.validated_data)

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance)
