"""The gateway as an ASGI callable: `uvicorn gateway.asgi:app` (what run_gateway starts)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django.setup()

from gateway.app import Gateway  # noqa: E402  (needs the app registry)

app = Gateway()
