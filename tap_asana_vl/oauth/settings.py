"""The settings a ``tap-asana-vl-auth`` command line resolves to, checked up front.

Everything that can be wrong with the options, the env file or the client credentials
is reported here, before the user is sent to the browser.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tap_asana_vl.auth import is_loopback_host
from tap_asana_vl.oauth.common import (
    DEFAULT_SCOPES,
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    FULL_ACCESS_SCOPE,
    PROG,
    SECTIONS_SCOPE,
    UsageError,
    say,
    stdin_is_tty,
)
from tap_asana_vl.oauth.env_file import NotOwnerError, check_owner, read_env_file
from tap_asana_vl.oauth.listener import LOOPBACK_BIND_ADDRESSES
from tap_asana_vl.oauth.options import OOB_REDIRECT_URI

__all__ = ["Settings", "resolve_settings"]


@dataclass
class Settings:
    """Validated options."""

    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: list[str]
    env_file: Path
    save_client: bool
    headless: bool
    open_browser: bool
    timeout: float
    print_token: bool
    authorize_url: str
    token_url: str
    # Comment out an active TAP_ASANA_VL_ACCESS_TOKEN in env_file when writing.
    comment_out_pat: bool = False


def _csv_or_space_list(values: Iterable[str] | None) -> list[str]:
    """Split repeated ``--scope`` values on blanks/commas, dropping duplicates."""
    result: list[str] = []
    for value in values or ():
        for item in value.replace(",", " ").split():
            if item not in result:
                result.append(item)
    return result


def _check_endpoint(url: str, option: str) -> None:
    """Refuse endpoints that are not http(s), or plain http to a remote host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise UsageError(
            f"{option} {url!r} uses plain http to a remote host; use https "
            "(secrets would travel unencrypted)"
        )


def _check_redirect_uri(redirect_uri: str, headless: bool) -> None:
    """Refuse a redirect URI the chosen mode cannot receive the redirect on."""
    parts = urllib.parse.urlsplit(redirect_uri)
    if redirect_uri != OOB_REDIRECT_URI and (
        parts.scheme not in ("http", "https") or not parts.hostname
    ):
        raise UsageError(
            f"--redirect-uri must be an http(s) URL (or {OOB_REDIRECT_URI} with "
            f"--headless), got {redirect_uri!r}"
        )
    if not headless and not (
        parts.scheme == "http" and (parts.hostname or "").lower() in LOOPBACK_BIND_ADDRESSES
    ):
        raise UsageError(
            f"the redirect URI {redirect_uri!r} is not a local http:// address this "
            "command can listen on (localhost, 127.0.0.1 or [::1]); use --headless and "
            "paste the redirected URL instead"
        )


def _read_env_file_values(env_file: Path) -> dict[str, str]:
    """The env file's settings, once it is known to be one we may write."""
    if env_file.is_dir():
        raise UsageError(f"--env-file {str(env_file)!r} is a directory")
    if not env_file.parent.is_dir():
        raise UsageError(f"the directory of --env-file {str(env_file)!r} does not exist")
    if not os.access(env_file.parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to the directory of --env-file {str(env_file)!r}")
    try:
        # Checked again when writing; here so the user does not authorize in vain.
        check_owner(env_file)
    except NotOwnerError as exc:
        raise UsageError(f"{exc} (--env-file)") from exc
    try:
        return read_env_file(env_file)
    except OSError as exc:
        raise UsageError(
            f"cannot read --env-file {str(env_file)!r}: {exc.strerror or exc}"
        ) from exc


def _ask_to_comment_out_pat(env_file: Path) -> bool:
    """Ask on the terminal whether to comment out the personal access token.

    Enter means yes: whoever runs this is switching to OAuth, and with both set the tap
    does not run at all; the token stays in the file, commented, to switch back.
    """
    say(
        f"{env_file} also sets {ENV_ACCESS_TOKEN} (a personal access token). The tap "
        "refuses to run with both it and OAuth set (keep only one authentication mode)."
    )
    print(
        f"Comment out {ENV_ACCESS_TOKEN} there (the line stays, with a #)? [Y/n] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline()
    # End of input (Ctrl-D) is no answer: then nothing is changed.
    return bool(answer) and answer.strip().lower() in ("", "y", "yes")


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Validate options and fill client credentials from env / env file."""
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    _check_endpoint(args.authorize_url, "--authorize-url")
    _check_endpoint(args.token_url, "--token-url")
    redirect_uri = args.redirect_uri.strip()
    _check_redirect_uri(redirect_uri, args.headless)
    env_file = Path(args.env_file).expanduser().absolute()
    file_values = _read_env_file_values(env_file)

    client_id = (
        args.client_id or os.environ.get(ENV_CLIENT_ID) or file_values.get(ENV_CLIENT_ID) or ""
    ).strip()
    client_secret = (
        args.client_secret
        or os.environ.get(ENV_CLIENT_SECRET)
        or file_values.get(ENV_CLIENT_SECRET)
        or ""
    ).strip()
    if not client_id and stdin_is_tty():
        print("Asana app client ID: ", end="", file=sys.stderr, flush=True)
        client_id = sys.stdin.readline().strip()
    if not client_secret and client_id and stdin_is_tty():
        client_secret = getpass.getpass("Asana app client secret (not echoed): ").strip()
    missing = [
        name
        for name, value in ((ENV_CLIENT_ID, client_id), (ENV_CLIENT_SECRET, client_secret))
        if not value
    ]
    if missing:
        raise UsageError(
            f"missing {' and '.join(missing)}: set {'it' if len(missing) == 1 else 'them'} "
            "in the environment or in "
            f"{env_file}, or pass --client-id/--client-secret (see {PROG} --help)"
        )

    scopes = [FULL_ACCESS_SCOPE] if args.full_access else _csv_or_space_list(args.scope)
    if args.scope is not None and not scopes:
        raise UsageError("--scope was given without any scope")
    if args.sections_scope:
        scopes = [*DEFAULT_SCOPES, SECTIONS_SCOPE]

    comment_out_pat = args.comment_out_pat
    # Asked before the browser opens, while the user is at the terminal; not asked
    # without one (scripts, CI): there only the flag comments it out.
    if not comment_out_pat and file_values.get(ENV_ACCESS_TOKEN) and stdin_is_tty():
        comment_out_pat = _ask_to_comment_out_pat(env_file)
    return Settings(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        scopes=scopes or list(DEFAULT_SCOPES),
        env_file=env_file,
        save_client=args.save_client,
        headless=args.headless,
        open_browser=not args.no_browser,
        timeout=args.timeout,
        print_token=args.print_token,
        authorize_url=args.authorize_url,
        token_url=args.token_url,
        comment_out_pat=comment_out_pat,
    )
