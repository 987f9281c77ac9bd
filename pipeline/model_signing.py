"""Model reference signatures: HMAC-SHA256 over :meth:`ModelRef.signed_text` with a fleet key.

A shared-key MAC, not a public-key signature: the registry and the edges hold the same secret
(from the environment). It proves a reference came from whoever holds the key; the reference's
sha256 then binds the file itself. Stdlib only, so the edge needs nothing more.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from pipeline.settings import ModelRef


def sign(ref: ModelRef, key: SecretStr) -> str:
    return hmac.new(key.get_secret_value().encode(), ref.signed_text(), hashlib.sha256).hexdigest()


def signed(ref: ModelRef, key: SecretStr | None) -> ModelRef:
    """``ref`` with its signature when a key is configured, unchanged otherwise."""
    return ref if key is None else ref.model_copy(update={"signature": sign(ref, key)})


def signature_problem(ref: ModelRef, key: SecretStr | None) -> str | None:
    """Why ``ref`` must not be used under ``key`` (None: fine or no key configured)."""
    if key is None:
        return None
    if ref.signature is None:
        return "unsigned model reference (edge.model_signing_key is set)"
    if not hmac.compare_digest(ref.signature, sign(ref, key)):
        return "model reference signature does not match"
    return None
