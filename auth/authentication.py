import hmac

from rest_framework import authentication, exceptions

from auth.actions import api_token_touch
from auth.models import ApiToken
from auth.tokens import inference_key_prefix, token_digest, token_prefix


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer ick_...` for the management REST API."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        token = token.strip()
        prefix = token_prefix(token)
        if prefix is None and inference_key_prefix(token) is not None:
            # The two kinds never stand in for each other; say which one this API wants.
            raise exceptions.AuthenticationFailed(
                "This is an inference key, for calling models through the gateway. "
                "The API takes a management token (ick_...) from the API tokens page."
            )
        if prefix is None:
            raise exceptions.AuthenticationFailed("Malformed token.")
        row = ApiToken.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
        if row is None or not hmac.compare_digest(row.digest, token_digest(token)):
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if not row.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive.")
        api_token_touch(token=row)
        return row.user, row

    def authenticate_header(self, request) -> str:
        return self.keyword
