from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from queues.actions import queue_create
from queues.forms import QueueForm
from queues.selectors import queues_with_usage


@login_required
def queue_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "queues/list.html", {"queues": queues_with_usage()})


@staff_member_required
def queue_create_view(request: HttpRequest) -> HttpResponse:
    form = QueueForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        queue = queue_create(**form.cleaned_data)
        messages.success(request, f"Queue {queue.name} created.")
        return redirect("queues:list")
    return render(request, "queues/create.html", {"form": form})
