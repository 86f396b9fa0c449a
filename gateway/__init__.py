"""The inference gateway: one ASGI service in front of every model (see gateway/app.py)."""
