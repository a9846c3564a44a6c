"""The command line of ``tap-asana-vl-auth``: options, defaults, help, and re-run advice."""

from __future__ import annotations

import argparse
import shlex
import textwrap
from collections.abc import Sequence

from tap_asana_vl import __version__
from tap_asana_vl.asana_urls import OAUTH_AUTHORIZE_URL, OAUTH_TOKEN_URL
from tap_asana_vl.oauth.common import (
    DEFAULT_SCOPE_PURPOSES,
    DEFAULT_SCOPES,
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_REFRESH_TOKEN,
    FULL_ACCESS_SCOPE,
    FULL_ACCESS_STREAMS,
    PROG,
    SECTIONS_SCOPE,
)
from tap_asana_vl.oauth.listener import DEFAULT_REDIRECT_URI

__all__ = ["DEFAULT_ENV_FILE", "OOB_REDIRECT_URI", "build_parser", "rerun_advice"]

DEFAULT_ENV_FILE = ".env"
DEFAULT_CALLBACK_TIMEOUT = 300.0
OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob"

_EPILOG = f"""\
setup:
  Create an app in Asana's developer console (https://app.asana.com/0/my-apps),
  add the redirect URL {DEFAULT_REDIRECT_URI} (or the one you pass with
  --redirect-uri: it must match exactly) and enable the permission scopes you
  request.  Put the app's client ID and secret in {ENV_CLIENT_ID} and
  {ENV_CLIENT_SECRET} (environment or the env file), then run
  {PROG}.

modes:
  (default)     listen on the local redirect URI, open the browser, wait
  --no-browser  listen, but only print the URL (open it on this machine)
  --headless    don't listen: open the printed URL anywhere, then paste the URL
                the browser was redirected to (or just its code) on stdin

default scopes (read only; what each is for):
{{scopes}}

streams that need full permissions:
{{full_access}}

left empty with the default scopes (full permissions read them):
  tasks.memberships and so the task_projects stream: need {SECTIONS_SCOPE}
                (--sections-scope, if the app is registered for it)
  goals.time_period: needs time_periods:read, not in Asana's scope list

a personal access token in the env file ({ENV_ACCESS_TOKEN}):
  the tap refuses to run with it and OAuth both set.  On a terminal the command
  offers to comment it out; otherwise pass --comment-out-pat to do so.

exit codes: 0 ok, 1 authorization failed, 2 usage or configuration error.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``tap-asana-vl-auth``."""
    full_access_text = textwrap.fill(
        f"{', '.join(FULL_ACCESS_STREAMS)}: their endpoints have no granular scope, "
        "so only a token with full permissions (--full-access, for an app registered "
        "with full permissions) can read them. With the default scopes the tap skips "
        "them with one warning each (or deselect them).",
        width=78,
        initial_indent="  ",
        subsequent_indent="  ",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Authorize tap-asana-vl in Asana (OAuth 2.0 authorization code + PKCE)\n"
            f"and save the refresh token as {ENV_REFRESH_TOKEN} in a .env file\n"
            "(mode 0600)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG.format(
            scopes="\n".join(f"  {s:<28}{why}" for s, why in DEFAULT_SCOPE_PURPOSES.items()),
            full_access=full_access_text,
        ),
    )
    add = parser.add_argument
    add("--client-id", help=f"the app's client ID (default: ${ENV_CLIENT_ID}, then the env file)")
    add(
        "--client-secret",
        help=(
            f"the app's client secret (default: ${ENV_CLIENT_SECRET}, then the env file; "
            "prefer those: command lines are visible to other local users)"
        ),
    )
    add(
        "--redirect-uri",
        default=DEFAULT_REDIRECT_URI,
        help=(
            "redirect URL registered for the app in Asana's developer console "
            "(default: %(default)s). Port 0 picks a free port (testing only)."
        ),
    )
    scope_group = parser.add_mutually_exclusive_group()
    scope_group.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help=(
            "scope(s) to request, space or comma separated; repeatable; replaces the "
            "default read-only scopes"
        ),
    )
    scope_group.add_argument(
        "--full-access",
        action="store_true",
        help=(
            f"request the '{FULL_ACCESS_SCOPE}' (full access) scope instead; needs an app "
            f"registered with full permissions; lets the tap read {', '.join(FULL_ACCESS_STREAMS)}"
        ),
    )
    scope_group.add_argument(
        "--sections-scope",
        action="store_true",
        help=(
            f"also request {SECTIONS_SCOPE}, which Asana needs for the task field "
            "memberships (so for the task_projects stream and the section columns); "
            "it is not in Asana's published scope list, and an app not registered for "
            "it gets its whole authorization refused"
        ),
    )
    add(
        "--env-file",
        default=DEFAULT_ENV_FILE,
        help="dotenv file to write the token to (default: %(default)s in the current directory)",
    )
    add(
        "--save-client",
        action="store_true",
        help=f"also store {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} in the env file",
    )
    add(
        "--comment-out-pat",
        action="store_true",
        help=(
            f"comment out an active {ENV_ACCESS_TOKEN} in the env file (the tap refuses "
            "to run with both); without a terminal the command does not ask"
        ),
    )
    mode_group = parser.add_mutually_exclusive_group()
    mode_group.add_argument(
        "--headless",
        action="store_true",
        help="don't listen; paste the redirected URL (or the code) on stdin",
    )
    mode_group.add_argument(
        "--no-browser",
        action="store_true",
        help="listen, but don't try to open a browser; just print the URL",
    )
    add(
        "--timeout",
        type=float,
        default=DEFAULT_CALLBACK_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the redirect (default: %(default)g)",
    )
    add(
        "--print-token",
        action="store_true",
        help="also print the refresh token on stdout (nothing else is printed there)",
    )
    add(
        "--authorize-url",
        default=OAUTH_AUTHORIZE_URL,
        help="authorization endpoint (default: %(default)s)",
    )
    add("--token-url", default=OAUTH_TOKEN_URL, help="token endpoint (default: %(default)s)")
    add("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _command_line(args: argparse.Namespace, scope_options: Sequence[str]) -> str:
    """The command line of this run with other scope options (no client secret)."""
    defaults = build_parser().parse_args([])
    words = [PROG]
    for option, name in (
        ("--client-id", "client_id"),
        ("--redirect-uri", "redirect_uri"),
        ("--env-file", "env_file"),
        ("--timeout", "timeout"),
        ("--authorize-url", "authorize_url"),
        ("--token-url", "token_url"),
    ):
        value = getattr(args, name)
        if value is not None and value != getattr(defaults, name):
            words += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    for option, name in (
        ("--save-client", "save_client"),
        ("--comment-out-pat", "comment_out_pat"),
        ("--headless", "headless"),
        ("--no-browser", "no_browser"),
        ("--print-token", "print_token"),
    ):
        if getattr(args, name):
            words.append(option)
    return shlex.join([*words, *scope_options])


def rerun_advice(args: argparse.Namespace, requested: Sequence[str], refused: Sequence[str]) -> str:
    """The re-run command(s) that avoid the scopes Asana refused."""
    dropped = [scope for scope in requested if scope in refused]
    remaining = [scope for scope in requested if scope not in refused]
    lines: list[str] = []

    def offer(text: str, scope_options: list[str]) -> None:
        lines.extend((text, f"    {_command_line(args, scope_options)}"))

    if requested == [FULL_ACCESS_SCOPE]:
        offer(
            "The app is not registered for full permissions; re-run with the default read "
            f"scopes ({', '.join(FULL_ACCESS_STREAMS)} are then skipped):",
            [],
        )
    else:
        if dropped and remaining:
            default = remaining == list(DEFAULT_SCOPES)
            offer(
                f"Re-run without {' '.join(dropped)}:",
                [] if default else ["--scope", " ".join(remaining)],
            )
        elif not dropped:
            lines.append(
                "Asana did not name the refused scopes: enable the requested scopes for the "
                "app in Asana's developer console, or re-run with only those it is "
                "registered for (--scope ...)."
            )
        lead = "Or, if" if lines else "If"
        offer(f"{lead} the app is registered with full permissions:", ["--full-access"])
    if args.client_secret:
        lines.append(
            f"(Pass the client secret as before, or better set {ENV_CLIENT_SECRET}; it is "
            "not repeated here.)"
        )
    return "\n".join(lines)
