"""``tap-asana-vl-auth``: the authorization flow, from the command line to the .env file.

Secrets (client secret, access and refresh tokens) are never printed, unless
``--print-token`` asks for the refresh token on stdout.  All messages go to stderr.
Exit codes: 0 success, 1 authorization failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import textwrap
import webbrowser
from collections.abc import Callable, Sequence

from tap_asana_vl.oauth.callback import MAX_PASTE_ATTEMPTS, NotPastedCodeError, parse_pasted
from tap_asana_vl.oauth.common import (
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_OAUTH_SCOPES,
    ENV_REFRESH_TOKEN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FULL_ACCESS_SCOPE,
    FULL_ACCESS_STREAMS,
    PROG,
    SECTIONS_SCOPE,
    AuthFailedError,
    CliError,
    ScopesRefusedError,
    say,
)
from tap_asana_vl.oauth.env_file import read_env_file, update_env_file
from tap_asana_vl.oauth.exchange import (
    TokenResponse,
    build_authorize_url,
    exchange_code,
    make_pkce_pair,
)
from tap_asana_vl.oauth.listener import CallbackListener, wait_for_callback
from tap_asana_vl.oauth.options import OOB_REDIRECT_URI, build_parser, rerun_advice
from tap_asana_vl.oauth.settings import Settings, resolve_settings

__all__ = ["main"]

OpenUrl = Callable[[str], object]


def _open_browser(open_url: OpenUrl | None, url: str) -> None:
    """Try to open ``url`` in a browser; never fails (the URL is printed anyway)."""
    if open_url is None:
        return
    try:
        opened = open_url(url)
    except Exception as exc:
        say(f"Could not open a browser ({type(exc).__name__}); open the URL above yourself.")
        return
    if opened is False:
        say("Could not open a browser; open the URL above yourself.")


def _read_pasted_line() -> str:
    """Read one line from stdin for headless mode."""
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError) as exc:
        raise AuthFailedError(
            f"cannot read the redirected URL from stdin ({type(exc).__name__})"
        ) from exc
    if not line:
        raise AuthFailedError(
            f"stdin closed before the redirected URL was pasted; re-run {PROG} --headless"
        )
    return line


def _authorize_url(settings: Settings, redirect_uri: str, state: str, challenge: str) -> str:
    return build_authorize_url(
        settings.authorize_url,
        client_id=settings.client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        scopes=settings.scopes,
    )


def _show_url(url: str) -> None:
    say()
    say(f"    {url}")
    say()


def _obtain_code_headless(settings: Settings, state: str, challenge: str) -> str:
    """Print the URL and read the redirected URL (or code) from stdin."""
    url = _authorize_url(settings, settings.redirect_uri, state, challenge)
    say("Open this URL in a browser (on any machine), sign in to Asana and click Allow:")
    _show_url(url)
    if settings.redirect_uri == OOB_REDIRECT_URI:
        say("Asana then shows an authorization code. Paste it here and press Enter:")
    else:
        say(
            textwrap.fill(
                f"Asana then sends the browser to {settings.redirect_uri}?code=...; that page "
                "may fail to load, which is fine. Copy the full URL from the address bar (or "
                "just the code) and paste it here, then press Enter:",
                width=78,
            )
        )
    attempts = 1
    while True:
        try:
            return parse_pasted(_read_pasted_line(), state, settings.redirect_uri)
        except NotPastedCodeError as exc:
            if attempts >= MAX_PASTE_ATTEMPTS:
                raise AuthFailedError(f"{exc}; re-run {PROG} --headless") from None
            attempts += 1
            say(f"{PROG}: {exc}. Paste it again and press Enter:")


def _obtain_code_listening(
    settings: Settings, state: str, challenge: str, open_url: OpenUrl | None
) -> tuple[str, str]:
    """Listen on the redirect URI, open the browser and wait for the redirect."""
    with CallbackListener(settings.redirect_uri, state) as listener:
        url = _authorize_url(settings, listener.redirect_uri, state, challenge)
        if open_url is not None:
            say("Opening your browser to authorize tap-asana-vl in Asana.")
            say("If it does not open, visit this URL on this machine:")
        else:
            say("Open this URL in a browser on this machine, sign in to Asana and click Allow:")
        _show_url(url)
        say(
            f"Waiting up to {settings.timeout:g} s for Asana to redirect to "
            f"{listener.redirect_uri} (Ctrl-C to abort) ..."
        )
        listener.start()
        _open_browser(open_url, url)
        code = wait_for_callback(listener, settings.timeout)
        return code, listener.redirect_uri


def _print_summary(
    settings: Settings, token: TokenResponse, written: Sequence[str], commented_out: Sequence[str]
) -> None:
    """Tell who authorized, where the token went and what to do next."""
    who = " ".join(
        part
        for part in (token.user_name, f"<{token.user_email}>" if token.user_email else None)
        if part
    )
    env_file = settings.env_file
    say(f"Authorized as {who}." if who else "Authorized.")
    say(f"Saved {', '.join(written)} to {env_file} (mode 0600).")
    if commented_out:
        say(f"Commented out {', '.join(commented_out)} in {env_file}.")
    file_values = read_env_file(env_file)
    if file_values.get(ENV_ACCESS_TOKEN):
        say(
            f"{PROG}: warning: {env_file} also sets {ENV_ACCESS_TOKEN}, and the tap refuses "
            "to run with both a personal access token and OAuth (keep only one authentication "
            f"mode): comment that line out, or re-run with --comment-out-pat."
        )
    missing = [
        key
        for key in (ENV_CLIENT_ID, ENV_CLIENT_SECRET)
        if key not in file_values and not os.environ.get(key)
    ]
    if FULL_ACCESS_SCOPE not in settings.scopes:
        say(
            textwrap.fill(
                f"Scoped token: the tap skips {', '.join(FULL_ACCESS_STREAMS)} (they need "
                "full permissions: re-run with --full-access if the app has them)"
                + (
                    ""
                    if SECTIONS_SCOPE in settings.scopes
                    else f" and task memberships (they need {SECTIONS_SCOPE}: --sections-scope)"
                )
                + ", with one warning each.",
                width=78,
            )
        )
    say()
    say("Next steps:")
    if missing:
        say(
            f"  - The tap also needs {' and '.join(missing)} to refresh access tokens:\n"
            f"    add {'it' if len(missing) == 1 else 'them'} to {env_file} "
            "(re-run with --save-client) or to your environment."
        )
    say("  - With Meltano (reads .env in the project directory):")
    say("      meltano run tap-asana-vl target-postgres")
    say("  - Stand-alone (the tap reads TAP_ASANA_VL_* variables with --config ENV):")
    say(f"      set -a; . {shlex.quote(str(env_file))}; set +a")
    say("      tap-asana-vl --config ENV --discover")
    say(f"Keep {env_file.name} private (it holds secrets) and out of version control.")


def _run(args: argparse.Namespace, open_url: OpenUrl | None) -> int:
    """Run the whole flow; raises CliError on failure."""
    settings = resolve_settings(args)
    if not settings.open_browser:
        open_url = None
    verifier, challenge = make_pkce_pair()
    state = secrets.token_urlsafe(32)

    try:
        if settings.headless:
            code = _obtain_code_headless(settings, state, challenge)
            redirect_uri = settings.redirect_uri
        else:
            code, redirect_uri = _obtain_code_listening(settings, state, challenge, open_url)
    except ScopesRefusedError as exc:
        raise AuthFailedError(
            f"{exc}\n{rerun_advice(args, settings.scopes, exc.refused)}"
        ) from None

    say("Exchanging the authorization code for tokens ...")
    token = exchange_code(
        settings.token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_uri=redirect_uri,
        code=code,
        code_verifier=verifier,
    )
    if settings.print_token:
        print(token.refresh_token, flush=True)

    # Asana grants all requested scopes or none; the tap reads this to skip, up front,
    # the streams and fields these scopes cannot read.
    values = {ENV_REFRESH_TOKEN: token.refresh_token, ENV_OAUTH_SCOPES: " ".join(settings.scopes)}
    if settings.save_client:
        values[ENV_CLIENT_ID] = settings.client_id
        values[ENV_CLIENT_SECRET] = settings.client_secret
    try:
        update = update_env_file(
            settings.env_file,
            values,
            comment_out=[ENV_ACCESS_TOKEN] if settings.comment_out_pat else [],
        )
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AuthFailedError(
            f"authorized, but could not write {settings.env_file}: {reason}; fix that and "
            f"re-run {PROG} (add --print-token to see the token instead)"
        ) from exc
    _print_summary(settings, token, list(values), update.commented_out)
    return EXIT_OK


def main(argv: list[str] | None = None, *, open_url: OpenUrl | None = None) -> int:
    """Run ``tap-asana-vl-auth``; return the exit code.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        open_url: opens the authorization URL in a browser (default:
            :func:`webbrowser.open`, which honours ``$BROWSER``); tests pass a
            function that follows the URL themselves.

    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args, open_url if open_url is not None else webbrowser.open)
    except CliError as exc:
        say(f"{PROG}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
