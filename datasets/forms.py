from django import forms

from datasets.actions import DATASET_FIELDS
from datasets.models import Dataset


class DatasetForm(forms.ModelForm):
    s3_endpoint = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text="Endpoint URL, e.g. https://minio.example:9000; empty for AWS.",
    )

    class Meta:
        model = Dataset
        fields = DATASET_FIELDS
        widgets = {"description": forms.TextInput()}
