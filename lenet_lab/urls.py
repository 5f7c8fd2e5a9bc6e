"""One redaction function for every URL that can reach output: terminal, files, the database.

Passwords hide in storage URLs (`postgresql+psycopg://lab:PASSWORD@host/db`), in mirror
URLs (`http://user:PASSWORD@host/`), and in drivers' error messages that quote them.
`redact` masks the password of every URL in a text, whatever the scheme, and also the
bare password of a URL it is told about (a driver may print it alone).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["redact", "safe_url"]

# scheme://user:password@ : the password is everything up to the last @ before the host
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^\s/]*)@")


def redact(text: str, *urls: str | None) -> str:
    """`text` with the password of every URL in it, and of each of `urls`, as `***`."""
    for url in urls:
        password = _password(url)
        if password:
            text = text.replace(password, "***")
    return _USERINFO.sub(lambda m: f"{m['head']}***@", text)


def safe_url(url: str) -> str:
    """The URL with its password masked, for everything that is printed or stored."""
    return redact(url, url)


def _password(url: str | None) -> str | None:
    if not url:
        return None
    match = _USERINFO.search(url)
    if match:
        return match["password"] or None
    try:
        return urlsplit(url).password
    except ValueError:
        return None
