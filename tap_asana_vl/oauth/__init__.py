"""``tap-asana-vl-auth``: get an Asana OAuth refresh token for tap-asana-vl.

Runs Asana's OAuth 2.0 authorization-code flow with PKCE: build the authorization URL,
send the user's browser there, receive the redirect (a loopback listener, or the URL
pasted in ``--headless`` mode), check ``state``, exchange the code, and store
``TAP_ASANA_VL_REFRESH_TOKEN`` in a ``.env`` file (mode 0600).

Modules, in the order the flow uses them:

- ``common``: names, exit codes, errors and the scopes requested by default;
- ``options``: the command line and the settings it resolves to;
- ``exchange``: PKCE, the authorization URL and the code-for-token exchange;
- ``callback``: what Asana's redirect says (code, state, errors, refused scopes);
- ``listener``: the one-shot HTTP listener on the local redirect URI;
- ``env_file``: writing the ``.env`` file safely (python-dotenv does the editing);
- ``cli``: the flow itself and ``main``.
"""
