from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console.api import ModelValidatedSerializer
from console.audit import audit_context
from datasets.actions import (
    CREDENTIAL_FIELDS,
    DATASET_FIELDS,
    dataset_create,
    dataset_delete,
    dataset_prewarm,
    dataset_update,
)
from datasets.models import Dataset, PrewarmRun
from datasets.selectors import latest_prewarm


class DatasetSerializer(ModelValidatedSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    # Write-only: stored encrypted, never returned.
    s3_access_key = serializers.CharField(write_only=True, required=False, allow_blank=True)
    s3_secret_key = serializers.CharField(write_only=True, required=False, allow_blank=True)
    hub_token = serializers.CharField(write_only=True, required=False, allow_blank=True)
    has_credentials = serializers.BooleanField(read_only=True)

    class Meta:
        model = Dataset
        fields = (
            "id", *DATASET_FIELDS, *CREDENTIAL_FIELDS, "has_credentials", "location", "phase",
            "phase_message", "owner", "created_at",
        )  # fmt: skip
        read_only_fields = ("location", "phase", "phase_message")


class PrewarmRunSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = PrewarmRun
        fields = (
            "id", "job_name", "status", "reason", "message", "percent", "files_total", "files_done",
            "files_skipped", "bytes_total", "bytes_done", "rate_bytes_per_second", "eta_seconds", "log_tail",
            "created_at", "started_at", "finished_at",
        )  # fmt: skip


class DatasetViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Datasets hold model files (NFS, S3, a Hugging Face or ModelScope repo, a node path or a PVC);
    NFS, S3 and hub repos are prewarmed into the cluster on create and on demand."""

    serializer_class = DatasetSerializer
    queryset = Dataset.objects.select_related("owner").order_by("name")

    def perform_create(self, serializer):
        serializer.instance = dataset_create(owner=self.request.user, **serializer.validated_data)

    def partial_update(self, request, pk=None):
        """Change fields or replace credentials (empty keeps them); a new source is prewarmed."""
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        dataset = dataset_update(dataset=serializer.instance, actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(dataset).data)

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance, context=audit_context(self.request, via="api"))

    @extend_schema(methods=["GET"], responses=PrewarmRunSerializer)
    @extend_schema(methods=["POST"], request=None, responses={202: None})
    @action(detail=True, methods=["get", "post"])
    def prewarm(self, request, pk=None):
        """GET: the latest prewarm's progress. POST: prewarm again (copies only what changed)."""
        dataset = self.get_object()
        if request.method == "POST":
            dataset_prewarm(dataset=dataset, actor=request.user)
            return Response(status=status.HTTP_202_ACCEPTED)
        run = latest_prewarm(dataset)
        if run is None:
            return Response(
                {"detail": "This dataset has not been prewarmed."}, status=status.HTTP_404_NOT_FOUND
            )
        return Response(PrewarmRunSerializer(run).data)

    @extend_schema(parameters=[OpenApiParameter("path", str, description="Folder inside the dataset.")])
    @action(detail=True)
    def browse(self, request, pk=None):
        """Folders and files (with sizes) at `path`."""
        from datasets.browse import browse_dataset

        return Response(browse_dataset(self.get_object(), request.query_params.get("path", "")))

    @extend_schema(
        parameters=[
            OpenApiParameter("path", str, description="The model path inside the dataset."),
            OpenApiParameter("runtime", str, enum=["vllm", "triton", "torchserve"]),
            OpenApiParameter("gpu_count", int),
            OpenApiParameter("gpu_type", str, description="A GPU product label; empty: the smallest GPU."),
            OpenApiParameter("gpu_memory_gib", float, description="Overrides the GPU type's memory."),
            OpenApiParameter(
                "engine_args", str, description="--dtype, --quantization, --max-model-len count."
            ),
        ]
    )
    @action(detail=True)
    def inspect(self, request, pk=None):
        """Layout check for the runtime and a GPU fit estimate, read without downloading weights."""
        from datasets.browse import inspect_model_path

        params = request.query_params
        return Response(
            inspect_model_path(
                self.get_object(),
                path=params.get("path", ""),
                runtime=params.get("runtime", "vllm"),
                gpu_count=params.get("gpu_count", "1"),
                gpu_type=params.get("gpu_type", ""),
                gpu_memory_gib=params.get("gpu_memory_gib", ""),
                engine_args=params.get("engine_args", ""),
            )
        )
