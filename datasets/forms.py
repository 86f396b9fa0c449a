from django import forms

from datasets.actions import DATASET_FIELDS
from datasets.models import Dataset


class DatasetForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = DATASET_FIELDS
        widgets = {"description": forms.TextInput()}
