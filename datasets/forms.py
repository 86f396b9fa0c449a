from django import forms

from console.crypto import CredentialsUnreadable
from datasets.actions import DATASET_FIELDS
from datasets.models import Dataset


class DatasetForm(forms.ModelForm):
    """Create or edit a dataset. Secrets are write-only: never rendered back into the page."""

    s3_endpoint = forms.URLField(
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
