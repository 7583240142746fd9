"""Redaction: credentials out of every message, log line and report we print.

:func:`redact` replaces the given secrets (header values, URL passwords) in every form a server or a
library may echo them (raw, URL-encoded, base64, ``user:password`` base64) and anything shaped like a
credential: ``Bearer``/``Basic``/``token`` values (also URL-encoded), and the values of credential-like
names (``api_key=``, ``token:``, ``?code=``, ``?sig=``, ``password``, ...). :func:`public_url` is a URL
without user, password or query string, for any scheme, and never fails.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

_NAMES = (r"api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|token|password|passwd|pwd|secret|"
          r"authorization|auth|code|sig|signature|x-amz-signature|key|session|sessionid|jwt|credential|credentials")
_CREDENTIALS = (re.compile(r"(?i)\b(bearer|basic|token)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]{4,}"),
                re.compile(rf"(?i)(?<![A-Za-z0-9_-])({_NAMES})(\"?\s*(?:[:=]|%3A|%3D)\s*\"?)[^\s\"',;}}&]+"),
                re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s@]+@"))  # userinfo of any URL


def forms(secret: str) -> list[str]:
    """The ways ``secret`` may come back: raw, URL-encoded (both styles) and base64 (standard and URL-safe)."""
    raw = secret.encode()
    out = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret, safe="/"),
           base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    out |= {f.rstrip("=") for f in list(out)}
    return sorted((f for f in out if len(f) >= 4), key=len, reverse=True)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every given secret (in each of its :func:`forms`) and anything shaped like a credential
    replaced by ``[redacted]``."""
    for secret in secrets:
        if len(secret) >= 4:
            for form in forms(secret):
                text = text.replace(form, "[redacted]")
    text = _CREDENTIALS[2].sub(lambda m: f"{m[1]}[redacted]@", text)
    text = _CREDENTIALS[0].sub(lambda m: f"{m[1]} [redacted]", text)
    return _CREDENTIALS[1].sub(lambda m: f"{m[1]}{m[2]}[redacted]", text)


def public_url(url: str) -> str:
    """``url`` without user, password, query string or fragment (where API keys hide), for any scheme."""
    try:
        parts = urlsplit(str(url))
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return redact(str(url).split("?", 1)[0])


_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it cut to :func:`public_url` (a query string becomes ``?[redacted]``)."""
    def cut(m: re.Match) -> str:
        url = m[0]
        return public_url(url) + ("?[redacted]" if "?" in url else "")

    return _URL.sub(cut, text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets a URL carries: its password, ``user:password`` and its query values."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return ()
    found = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found += [userinfo, userinfo.partition(":")[2]]
    found += [v for pair in parts.query.split("&") for v in [pair.partition("=")[2]] if v]
    return tuple(s for s in found if len(s) >= 4)


__all__ = ["forms", "public_url", "redact", "redact_urls", "url_secrets"]
