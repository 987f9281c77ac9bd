"""Console users: hashed passwords, two roles, CSRF tokens.

Users come from ``console.users`` (``name:role:hash;...``, set from the environment) and/or
``console.users_file`` (one ``name:role:hash`` per line). Hashes are the stdlib's scrypt
(``scrypt$n$r$p$salt$hash``, base64, n=2**14 r=8 p=1: ~40 ms and 16 MiB per check here, which
is the point: a stolen file is slow to guess at). ``viewer`` reads, ``admin`` may also change
rules; there is no anonymous access.

CSRF: every form carries the session's random token, compared in constant time on each POST
(the synchronizer-token pattern); the session cookie is also SameSite=strict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import ConfigError

Role = Literal["viewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    @property
    def can_edit(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a usable scrypt hash, or None. Checked when users load: a hash cut
    short in a YAML file or an environment variable would otherwise only show as "wrong
    password" for ever, and parameters beyond scrypt's memory cap as the same."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "not scrypt$n$r$p$salt$hash (make one with `pipeline console --hash-password`)"
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        return "n, r, p are not integers or salt/hash are not base64"
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * n * r * p > 32 * 1024 * 1024:
        return f"scrypt parameters n={n} r={r} p={p} are invalid or need more than 32 MiB per check"
    if len(salt) < 8 or len(digest) < 16:
        return "salt or hash too short"
    return None


def parse_users(text: str, where: str) -> dict[str, User]:
    users: dict[str, User] = {}
    # a line that starts with '#' is a comment, whatever it holds (a ';' in it is not a separator)
    lines = (ln for ln in text.splitlines() if not ln.strip().startswith("#"))
    for number, entry in enumerate((e.strip() for ln in lines for e in ln.split(";")), 1):
        if not entry:
            continue
        name, sep1, rest = entry.partition(":")
        role, sep2, password_hash = rest.partition(":")
        if not (sep1 and sep2 and name and password_hash.startswith("scrypt$")):
            raise ConfigError(f"{where}: entry {number} is not 'name:role:scrypt$...'")
        if role not in ROLES:
            raise ConfigError(f"{where}: user {name!r} has role {role!r}; roles are {', '.join(ROLES)}")
        if (problem := hash_problem(password_hash)) is not None:
            raise ConfigError(f"{where}: user {name!r}: password hash {problem}")
        if name in users:  # which line wins would be a guess: say so instead
            raise ConfigError(f"{where}: user {name!r} is listed twice")
        users[name] = User(name, role, password_hash)  # checked against ROLES
    return users


def load_users(inline: str | None, file: Path | None) -> dict[str, User]:
    users: dict[str, User] = {}
    if file is not None:
        try:
            users.update(parse_users(file.read_text(), str(file)))
        except OSError as exc:
            raise ConfigError(f"cannot read console.users_file {file}: {exc}") from exc
    if inline:
        users.update(parse_users(inline, "console.users"))
    if not users:
        raise ConfigError(
            "the console has no users: set PIPELINE_CONSOLE__USERS='name:admin:HASH' or console.users_file"
            " (HASH from `pipeline console --hash-password`); there is no anonymous access"
        )
    return users


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(session_token: str | None, form_token: str | None) -> bool:
    return bool(session_token and form_token) and hmac.compare_digest(str(session_token), str(form_token))
