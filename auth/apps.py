from django.apps import AppConfig


class AccessConfig(AppConfig):
    # The folder is auth/ (the product layout); the label avoids clashing with django.contrib.auth.
    name = "auth"
    label = "access"
    verbose_name = "Access: tokens and API keys"

    def ready(self) -> None:
        from auth import schema  # noqa: F401  (registers the OpenAPI security scheme)
