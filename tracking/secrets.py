"""Secrets never leave the process: credentials in URLs are masked before anything prints, logs or saves them."""

from __future__ import annotations

import re

SECRET_MASK = "***"
"""What ``mask_secrets`` writes in place of a password."""

_USERINFO_PASSWORD = re.compile(
    # scheme://user:  then the password up to the last "@" of the authority (a password with an
    # unencoded "@" is masked whole; a "/" or whitespace or quote ends the authority)
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s\"'<>]*:)(?P<secret>[^/\s\"'<>]*)(?P<at>@)"
)
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token)[A-Za-z0-9_.\-]*=)"
    r"(?P<secret>[^&;#\s\"'<>]*)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """``text`` with every credential of the URLs in it replaced by ``SECRET_MASK``.

    Masks the password of a URL's user-info (``scheme://user:secret@host`` becomes
    ``scheme://user:***@host``; the user name stays) and the value of every query parameter
    whose name contains ``password``, ``passwd``, ``pwd``, ``secret`` or ``token``
    (``?sslpassword=secret&x=1`` becomes ``?sslpassword=***&x=1``), wherever such URLs
    appear in ``text`` (a bare URL, a console line, a JSON or Markdown document). Everything
    else is returned unchanged, and masking is idempotent. When in doubt it masks more,
    never less: an unencoded ``@`` inside a password hides the whole password.
    """

    def masked(match: re.Match[str]) -> str:
        if not match.group("secret"):
            return match.group(0)
        return match.group("head") + SECRET_MASK + (match.groupdict().get("at") or "")

    return _SECRET_QUERY.sub(masked, _USERINFO_PASSWORD.sub(masked, text))


def has_masked_secret(url: str) -> bool:
    """True when ``url`` carries a credential that ``mask_secrets`` replaced: such a URL no
    longer connects and the real one must come from the caller again."""
    return any(match.group("secret") == SECRET_MASK
               for pattern in (_USERINFO_PASSWORD, _SECRET_QUERY) for match in pattern.finditer(url))


def without_password(url: str) -> str:
    """``url`` with its credentials masked as ``***`` (see ``mask_secrets``): the form of a URL
    that may be printed, logged or saved."""
    return mask_secrets(url)
