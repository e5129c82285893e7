"""Secrets out of what is shown: SRT passphrases and stream IDs in URIs and in free text.

The server redacts what viewers read; ``castway top`` redacts what it paints on a screen.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REDACTED = "***"
# Query keys whose values viewers never see: the SRT passphrase, the users of a shared-port
# endpoint (their passwords), and the stream ID (it often
# carries a token). Compared after percent-decoding, as the data plane reads them.
SECRET_KEYS = frozenset({"passphrase", "streamid", "users"})
QUERY_PAIR = re.compile(r"([?&])([^=&#\s]*)=([^&#\s]*)")


def _is_secret(key: str) -> bool:
    return unquote(key).lower() in SECRET_KEYS


def redact_uri(uri: str) -> str:
    """``uri`` with the value of every secret key (in any spelling: ``PassPhrase``,
    ``pass%70hrase``) replaced by ``***``."""
    head, sep, rest = uri.partition("?")
    if not sep:
        return uri
    query, hash_sep, fragment = rest.partition("#")
    pairs = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        pairs.append(f"{key}={REDACTED}" if eq and _is_secret(key) else part)
    return f"{head}?{'&'.join(pairs)}{hash_sep}{fragment}"


def redact_text(text: str) -> str:
    """Free text (an error) with the values of secret keys of any URI in it replaced."""
    return QUERY_PAIR.sub(
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if _is_secret(m[2]) else m[0], text
    )
