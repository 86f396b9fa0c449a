from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from auth.actions import api_token_create


class Command(BaseCommand):
    help = "Create a management-API token for a user and print it once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for.")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        _token, plaintext = api_token_create(user=user, name=name)
        self.stdout.write(plaintext)
        self.stderr.write("Shown once: store it now. Use it as 'Authorization: Bearer <token>'.")
