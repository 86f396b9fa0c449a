from django.apps import AppConfig


class GatewayConfig(AppConfig):
    # An app for its management command (run_gateway) and its Celery task (the usage roll-up);
    # it has no models: usage rows live in auth (UsageHour).
    name = "gateway"
    verbose_name = "Inference gateway"
