"""HTTP sessions for Asana whose timeout bounds a whole response, not each socket read.

``requests`` applies its timeout to the connection and to each read: a response that
trickles in a byte at a time never times out (seen: 48 s with a 3 s timeout). The
adapter here reads the body itself, a chunk at a time, each read bounded by the time
left, and fails with a ``ReadTimeout`` (retried like any timeout) once it runs out.
The body it reads is a ``bytearray`` (grown in place, held once); requests' ``text``
and ``json()`` read it as they read ``bytes``.
"""

from __future__ import annotations

import time
import typing as t

import requests
import urllib3
from requests.adapters import HTTPAdapter

CHUNK_BYTES = 64 * 1024


class WholeResponseTimeoutAdapter(HTTPAdapter):
    """An adapter whose (read) timeout is a deadline for the complete response.

    It reads the body itself, a chunk at a time, each read bounded by the time left, and
    fails with a ``ReadTimeout`` (retried like any timeout) once it runs out.
    """

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: t.Any = None,
        **kwargs: t.Any,
    ) -> requests.Response:
        """Send, then read the body within what is left of the timeout."""
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        if stream or seconds is None:
            return super().send(request, stream=stream, timeout=timeout, **kwargs)
        deadline = time.monotonic() + float(seconds)
        response = super().send(request, stream=True, timeout=timeout, **kwargs)
        # One buffer grown in place: glibc moves a large one by remapping its pages,
        # while chunks joined at the end would be held twice at once (chunks + whole).
        body = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"the response took longer than {float(seconds):g}s in all"
                    raise requests.exceptions.ReadTimeout(msg, request=request)
                _limit_next_read(response, left)
                chunk = _read_chunk(response, request)
                if not chunk:
                    break
                body += chunk
        except BaseException:
            response.close()
            raise
        # What requests itself does when it reads a body (it has no public setter).
        response._content = body
        response._content_consumed = True
        response.raw.release_conn()  # read to the end: the connection is reusable
        return response


def _read_chunk(response: requests.Response, request: requests.PreparedRequest) -> bytes:
    """One socket read of the body, with urllib3's errors turned into requests' own.

    (As ``requests`` does when it reads a body, so callers retry them as usual.)
    """
    try:
        return bytes(response.raw.read1(CHUNK_BYTES, decode_content=True))
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc, request=request) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc, request=request) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc, request=request) from None
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc, request=request) from None


def _limit_next_read(response: requests.Response, seconds: float) -> None:
    """Let the next socket read wait at most ``seconds`` (when the socket is reachable)."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(0.001, seconds))


def new_session(url_base: str, pool_size: int = 10) -> requests.Session:
    """A session for ``url_base``: whole-response timeouts and frozen proxy settings.

    Its connection pool keeps ``pool_size`` connections (one per thread that sends).
    """
    session = requests.Session()
    adapter = WholeResponseTimeoutAdapter(pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # requests re-reads proxy and CA-bundle variables from the environment on every
    # request (a scan of os.environ: a third of its CPU per request). Resolve them once
    # for Asana's host, honouring NO_PROXY, and freeze them.
    settings = session.merge_environment_settings(url_base, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False
    return session


def let_go_of_body(response: requests.Response) -> None:
    """Drop the raw body of a response whose JSON is parsed and kept beside it.

    The SDK keeps a page's response until the next page is in, and a listing read
    ahead holds its second page's: each up to ~0.7 MB of bytes next to the records
    decoded from them, which are all that is read from then on.
    """
    response._content = b""  # as above: requests has no public setter
