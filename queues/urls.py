from django.urls import path

from queues import views

app_name = "queues"
urlpatterns = [
    path("", views.queue_list_view, name="list"),
    path("new/", views.queue_create_view, name="create"),
    path("flavors/", views.flavor_list_view, name="flavors"),
    path("flavors/new/", views.flavor_create_view, name="flavor_create"),
    path("flavors/<slug:name>/edit/", views.flavor_edit_view, name="flavor_edit"),
    path("flavors/<slug:name>/queues/", views.flavor_queues_partial, name="flavor_queues"),
    # Queue names are DNS labels: "new" and "flavors" above win over a queue of that name.
    path("<slug:name>/", views.queue_detail_view, name="detail"),
    path("<slug:name>/live/", views.queue_live_partial, name="live"),
    path("<slug:name>/edit/", views.queue_edit_view, name="edit"),
]
