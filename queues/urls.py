from django.urls import path

from queues import views

app_name = "queues"
urlpatterns = [
    path("", views.queue_list_view, name="list"),
    path("new/", views.queue_create_view, name="create"),
]
