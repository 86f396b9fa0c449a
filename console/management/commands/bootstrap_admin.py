import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "On first start, create an admin account and print how to log in (does nothing afterwards)."

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "admin@example.com", password)
        # Shown once and never stored in plaintext; lost? `manage.py changepassword admin`.
        self.stdout.write(
            f"Created the admin account. Log in as 'admin' with password {password} "
            "(shown once; change it with 'manage.py changepassword admin')."
        )
