from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from auth.api import InferenceKeyViewSet
from console.dashboard_views import audit_view, quotas_view, usage_csv_view, usage_view
from datasets.api import DatasetViewSet
from queues.api import FlavorViewSet, QueueViewSet
from services.api import ServiceViewSet

router = DefaultRouter()
router.register("queues", QueueViewSet, basename="queue")
router.register("flavors", FlavorViewSet, basename="flavor")
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("services", ServiceViewSet, basename="service")
router.register("keys", InferenceKeyViewSet, basename="inference-key")

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="services:list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("services/", include("services.urls")),
    path("queues/", include("queues.urls")),
    path("datasets/", include("datasets.urls")),
    path("tokens/", include("auth.urls")),
    path("keys/", include("auth.key_urls")),
    path("usage/", usage_view, name="usage"),
    path("usage.csv", usage_csv_view, name="usage-csv"),
    path("audit/", audit_view, name="audit"),
    path("quotas/", quotas_view, name="quotas"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
