from django.urls import path

from auth import key_views

app_name = "keys"
urlpatterns = [
    path("", key_views.key_list_view, name="list"),
    path("new/", key_views.key_create_view, name="create"),
    path("<int:pk>/", key_views.key_detail_view, name="detail"),
    path("<int:pk>/rotate/", key_views.key_rotate_view, name="rotate"),
    path("<int:pk>/revoke/", key_views.key_revoke_view, name="revoke"),
]
