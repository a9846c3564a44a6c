"""Asana's OAuth endpoints, defined once for the tap and ``tap-asana-vl-auth``.

(The API root, ``DEFAULT_API_URL``, is defined in ``client.py``, its only user.)
"""

OAUTH_AUTHORIZE_URL = "https://app.asana.com/-/oauth_authorize"
OAUTH_TOKEN_URL = "https://app.asana.com/-/oauth_token"  # noqa: S105 (a URL)
