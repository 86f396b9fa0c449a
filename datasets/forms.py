from django import forms
from django.forms import BoundField

from console.crypto import CredentialsUnreadable
from datasets.actions import DATASET_FIELDS
from datasets.models import Dataset


class DatasetForm(forms.ModelForm):
    """Create or edit a dataset. Secrets are write-only: never rendered back into the page."""

    # The page shows the sections of the chosen kind only; the others are hidden and disabled, so
    # their inputs are not sent (without JavaScript every section shows). Every field is in one.
    SECTIONS = (
        ("Dataset", (), ("name", "description", "kind")),
        ("NFS export", (Dataset.Kind.NFS,), ("nfs_server", "nfs_path")),
        (
            "S3 bucket",
            (Dataset.Kind.S3,),
            (
                "s3_endpoint",
                "s3_bucket",
                "s3_prefix",
                "s3_region",
                "s3_path_style",
                "s3_access_key",
                "s3_secret_key",
            ),
        ),
        (
            "Repository",
            (Dataset.Kind.HUB, Dataset.Kind.MODELSCOPE),
            ("hub_repo", "hub_revision", "hub_endpoint", "hub_token"),
        ),
        ("Node path", (Dataset.Kind.LOCAL,), ("local_path",)),
        ("Existing PVC", (Dataset.Kind.PVC,), ("pvc_name",)),
        ("Cluster-local copy", tuple(Dataset.PREWARMED_KINDS), ("cache_size", "storage_class")),
    )

    s3_endpoint = forms.URLField(
        label="S3 endpoint",
        required=False,
        assume_scheme="https",
        help_text="Endpoint URL, e.g. https://minio.example:9000; empty for AWS.",
    )
    s3_access_key = forms.CharField(
        label="S3 access key", required=False, widget=forms.PasswordInput(render_value=False)
    )
    s3_secret_key = forms.CharField(
        label="S3 secret key",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted; handed to the cluster only as a Secret. Checked by listing the prefix.",
    )

    hub_endpoint = forms.URLField(
        label="Hub endpoint",
        required=False,
        assume_scheme="https",
        help_text="Empty for https://huggingface.co or https://www.modelscope.cn; a mirror, e.g. "
        "https://hf-mirror.com.",
    )
    hub_token = forms.CharField(
        label="Hub token",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="A Hugging Face access token or a ModelScope SDK token, for private or gated repos. "
        "Stored encrypted; handed to the cluster only as a Secret. Checked with the revision on save.",
    )

    class Meta:
        model = Dataset
        fields = DATASET_FIELDS
        widgets = {"description": forms.TextInput()}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["name"].disabled = True  # it names the cache PVC
            try:
                stored = set(self.instance.credentials())
            except CredentialsUnreadable:  # a rotated key: they must be entered again
                stored = set()
            for name in stored & set(self.fields):
                self.fields[name].widget.attrs["placeholder"] = "(stored; leave empty to keep)"

    def sections(self) -> list[tuple[str, str, list[BoundField]]]:
        """(title, the kinds it is for separated by spaces or "" for all, its fields)."""
        return [
            (title, " ".join(kinds), [self[name] for name in names]) for title, kinds, names in self.SECTIONS
        ]
