"""One question to an HTTP server: did it answer, and with what status. Every health check asks
through it (the MLflow server a run is sent to, ``convscope serve``'s checks, servers starting up)."""

from __future__ import annotations

import urllib.error
import urllib.request


def probe(url: str, timeout: float, auth: tuple[str, str] | None = None) -> tuple[int | None, BaseException | None]:
    """Ask ``url`` once (with HTTP basic ``auth`` when given): ``(status, None)`` when a server
    answered, whatever the status (an error status is an answer too), or ``(None, error)`` when none
    did (refused, unreachable, timed out, a malformed URL)."""
    request = urllib.request.Request(url)
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return None, error


def reason(error: BaseException) -> BaseException | str:
    """What a failed ``probe`` says about the connection (``URLError`` wraps the real cause)."""
    return getattr(error, "reason", error)
