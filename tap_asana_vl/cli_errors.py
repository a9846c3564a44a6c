"""How a failed command-line run ends: one ERROR line, exit code 1.

The SDK logs a fatal error with its traceback (~45 lines of SDK frames around one
useful line). The traceback is for developers: it is shown only when the log level is
DEBUG (``TAP_ASANA_VL_LOGLEVEL=DEBUG`` or ``LOGLEVEL=DEBUG``, read by the SDK).
"""

from __future__ import annotations

import logging
import typing as t
from contextlib import contextmanager

import click
from singer_sdk.exceptions import ConfigValidationError, SingerSDKError

from tap_asana_vl.auth import AsanaAuthError
from tap_asana_vl.inputs import InputError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

# Errors whose message is written for the user; anything else is a bug or an
# unforeseen failure, printed with its type and a pointer to the traceback.
EXPLAINED_ERRORS = (InputError, SingerSDKError, AsanaAuthError)
DEBUG_HINT = "set TAP_ASANA_VL_LOGLEVEL=DEBUG for the traceback"


@contextmanager
def errors_in_one_line(logger: logging.Logger) -> Iterator[None]:
    """Log an error escaping the block as one ERROR line, then exit with code 1."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise  # click's own ways of ending (ctx.exit() is an exception too)
    except BrokenPipeError:
        raise  # the reader of stdout went away: click exits quietly, as before
    except ConfigValidationError as exc:
        # One line per problem: each names its setting.
        _exit(logger, list(exc.errors) or [str(exc)], exc)
    except Exception as exc:
        _exit(logger, [one_line(exc)], exc)


def one_line(exc: BaseException) -> str:
    """The line to print for ``exc``."""
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, EXPLAINED_ERRORS):
        return message
    return f"{type(exc).__name__}: {message} ({DEBUG_HINT})"


def _exit(logger: logging.Logger, lines: list[str], exc: BaseException) -> t.NoReturn:
    for line in lines[:-1]:
        logger.error("%s", line)
    show_traceback = logger.isEnabledFor(logging.DEBUG)
    logger.error("%s", lines[-1], exc_info=exc if show_traceback else None)
    raise SystemExit(1) from None
