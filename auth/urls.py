from django.urls import path

from auth import views

app_name = "access"
urlpatterns = [
    path("", views.token_list_view, name="tokens"),
    path("<int:pk>/revoke/", views.token_revoke_view, name="revoke"),
]
