from django.urls import path

from services import check_views, picker_views, policy_views, views

app_name = "services"
urlpatterns = [
    path("", views.service_list_view, name="list"),
    path("new/", views.service_create_view, name="create"),
    path("new/browse/", picker_views.model_browse_partial, name="model_browse"),
    path("new/check/", picker_views.model_check_partial, name="model_check"),
    path("new/admission/", check_views.admission_check_partial, name="admission_check"),
    path("<int:pk>/", views.service_detail_view, name="detail"),
    path("<int:pk>/status/", views.service_status_partial, name="status"),
    path("<int:pk>/position/", check_views.queue_position_partial, name="queue_position"),
    path("<int:pk>/manifests/", views.service_manifests_view, name="manifests"),
    path("<int:pk>/logs/", views.service_logs_view, name="logs"),
    path("<int:pk>/delete/", views.service_delete_view, name="delete"),
    path("<int:pk>/scale/", views.service_scale_view, name="scale"),
    path("<int:pk>/policy/", policy_views.service_policy_view, name="policy"),
    path("<int:pk>/playground/", views.service_playground_partial, name="playground"),
]
