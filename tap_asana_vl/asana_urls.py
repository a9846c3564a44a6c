"""Asana's URLs, defined once for the tap and ``tap-asana-vl-auth``."""

#: The API root (the ``api_url`` setting's default).
API_URL = "https://app.asana.com/api/1.0"

OAUTH_AUTHORIZE_URL = "https://app.asana.com/-/oauth_authorize"
OAUTH_TOKEN_URL = "https://app.asana.com/-/oauth_token"  # noqa: S105 (a URL)
