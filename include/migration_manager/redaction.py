"""Secret redaction: the one place that removes credentials from text before it is logged,
stored in a run's record, sent in a notification or shown on a page.

Two shapes are recognised: ``scheme://user:password@`` in URLs (the user is kept) and
``password=...`` / ``"token": "..."`` in key/value connection strings and JSON-ish text.
"""

from __future__ import annotations

import re

MASK = "***"

# user:password@ in URLs (a URL's password has no '/', '@' or blank: those are percent-encoded)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@"
)
# password=... in key/value connection strings; "password": "..." in JSON-ish text
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token)\b[\"']?\s*[=:]\s*)(?P<q>['\"]?)[^'\"\s,;}]+(?P=q)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Text without credentials: ``scheme://user:pw@`` and ``password=...`` lose the secret."""
    text = _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
    return _KV_PASSWORD.sub(rf"\g<key>\g<q>{MASK}\g<q>", text)
