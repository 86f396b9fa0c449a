from django.urls import path

from datasets import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list_view, name="list"),
    path("new/", views.dataset_create_view, name="create"),
    path("<int:pk>/", views.dataset_detail_view, name="detail"),
    path("<int:pk>/edit/", views.dataset_edit_view, name="edit"),
    path("<int:pk>/progress/", views.dataset_progress_partial, name="progress"),
    path("<int:pk>/prewarm/", views.dataset_prewarm_view, name="prewarm"),
    path("<int:pk>/delete/", views.dataset_delete_view, name="delete"),
]
