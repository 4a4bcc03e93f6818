"""Server-side HTTP digest for SIP (RFC 7616 / RFC 3261 §22): challenges, Authorization parsing, verification.

Pure: no sockets, no sippy, clock injected. Never logs or exposes a password or HA1 (no repr shows them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from voipgw.sip.events import SipError

MAX_HEADER_LEN = 4096
"""Longer Authorization values are refused unparsed (a phone's is about 300 bytes)."""
MAX_PARAMS = 32
NONCE_TTL_S = 300.0
"""A nonce older than this gets ``stale=true``: the phone re-sends with a fresh one, without asking its user."""
MAX_TRACKED_NONCES = 4096
"""Nonces whose highest ``nc`` we remember (oldest forgotten first); an untracked nonce must start at nc=1."""
NONCE_MAC_LEN = 16
NONCE_SALT_LEN = 8
ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
"""What we can verify; ``-sess`` variants and userhash are not supported."""
DEFAULT_ALGORITHMS = ("MD5",)
"""Offered by default. Measured: baresip 1.0 (libre) fails the whole REGISTER ("Function not implemented") if
ANY challenge names SHA-256, even next to an MD5 one, so offering both (RFC 8760 order) locks such phones out.
Pass ``algorithms=("SHA-256", "MD5")`` for phones that pick the challenge they support."""

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")


class DigestError(SipError):
    """Base of the digest failures."""


class DigestParseError(DigestError):
    """An Authorization header value that is not a well-formed Digest credential."""


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of one ``Authorization: Digest ...`` header (names lower-cased, quotes removed)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    """As sent (``MD5`` when absent, RFC 7616 §3.4)."""
    qop: str | None
    nc: str | None
    cnonce: str | None
    opaque: str | None


def parse_authorization(value: str) -> DigestCredentials:
    """Parse an Authorization / Proxy-Authorization value; raises only DigestParseError."""
    if not isinstance(value, str):
        raise DigestParseError("not a string")
    if len(value) > MAX_HEADER_LEN:
        raise DigestParseError("header too long")
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise DigestParseError("not a Digest credential")
    params = _auth_params(rest)
    for name in _REQUIRED:
        if name not in params:
            raise DigestParseError(f"missing {name}")
    qop = params.get("qop")
    nc, cnonce = params.get("nc"), params.get("cnonce")
    if qop is not None:
        if nc is None or cnonce is None:
            raise DigestParseError("qop without nc/cnonce")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise DigestParseError("nc is not 8 hex digits")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=params.get("opaque"),
    )


def _auth_params(text: str) -> dict[str, str]:
    """``name=token`` / ``name="quoted \\" string"`` pairs separated by commas (RFC 7235 auth-param)."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i].lower()
        if not name:
            raise DigestParseError(f"bad character {text[i]!r} at {i}")
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            raise DigestParseError(f"parameter {name[:20]!r} without a value")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise DigestParseError("unterminated quoted string")
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise DigestParseError("dangling escape")
                    chars.append(text[i + 1])
                    i += 2
                    continue
                i += 1
                if ch == '"':
                    break
                chars.append(ch)
            val = "".join(chars)
        else:
            start = i
            while i < n and text[i] in _TOKEN_CHARS:
                i += 1
            val = text[start:i]
            if not val:
                raise DigestParseError(f"empty value for {name[:20]!r}")
        if name in out:
            raise DigestParseError(f"duplicate parameter {name[:20]!r}")
        if len(out) >= MAX_PARAMS:
            raise DigestParseError("too many parameters")
        out[name] = val
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise DigestParseError(f"expected ',' at {i}")
    return out


# --- verdicts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The credentials are valid for ``user``."""

    user: str


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 with ``headers`` (one WWW-Authenticate value per algorithm)."""

    headers: tuple[str, ...]
    reason: str
    """Why (for logs and counters): ``no credentials``, ``stale nonce``, ``unparsable``..."""


@dataclass(frozen=True, slots=True)
class Forbidden:
    """Answer 403: a wrong password, an unknown user, or credentials for someone else."""

    reason: str


AuthVerdict = Authenticated | Challenge | Forbidden


class DigestAuthenticator:
    """Issues stateless nonces (timestamp + HMAC) and checks Authorization headers against a password lookup.

    ``password_for(user)`` returns the plaintext password or None for an unknown user. Thread-safe (the replay
    table is the only mutable state).
    """

    def __init__(
        self,
        realm: str,
        password_for: Callable[[str], str | None],
        *,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        nonce_ttl_s: float = NONCE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be a non-empty subset of {list(ALGORITHMS)}, not {algorithms}")
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must not contain quotes or backslashes")
        self.realm = realm
        self.algorithms = algorithms
        self._password_for = password_for
        self._secret = secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        self._ttl = nonce_ttl_s
        self._clock = clock
        self._max_tracked = max_tracked_nonces
        self._nc_seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DigestAuthenticator(realm={self.realm!r}, algorithms={self.algorithms})"

    # nonces ------------------------------------------------------------------------------------------------
    def new_nonce(self) -> str:
        """base64url(timestamp || salt || HMAC(secret, timestamp || salt || realm)): verifiable without a
        table; the salt keeps two challenges issued at the same instant apart (their nc counts are separate)."""
        stamp = struct.pack(">d", self._clock()) + secrets.token_bytes(NONCE_SALT_LEN)
        mac = hmac.new(self._secret, stamp + self.realm.encode(), hashlib.sha256).digest()[:NONCE_MAC_LEN]
        return base64.urlsafe_b64encode(stamp + mac).decode("ascii").rstrip("=")

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since we issued ``nonce``, or None if we never did."""
        if len(nonce) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 8 + NONCE_SALT_LEN + NONCE_MAC_LEN:
            return None
        stamp, mac = raw[: 8 + NONCE_SALT_LEN], raw[8 + NONCE_SALT_LEN :]
        want = hmac.new(self._secret, stamp + self.realm.encode(), hashlib.sha256).digest()[:NONCE_MAC_LEN]
        if not hmac.compare_digest(mac, want):
            return None
        return float(self._clock() - struct.unpack(">d", stamp[:8])[0])

    def challenge(self, *, stale: bool = False, reason: str = "no credentials") -> Challenge:
        nonce = self.new_nonce()
        tail = ", stale=true" if stale else ""
        headers = tuple(
            f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{self._opaque}", algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        )
        return Challenge(headers=headers, reason=reason)

    # verification ------------------------------------------------------------------------------------------
    def verify(self, authorization: list[str], method: str, expected_user: str) -> AuthVerdict:
        """Check the request's Authorization values (those for our realm) for ``expected_user``.

        No value for our realm: a challenge. Unknown user, a user other than ``expected_user`` or a wrong
        response: Forbidden. An expired nonce with a right response: a ``stale=true`` challenge.
        """
        mine: DigestCredentials | None = None
        unparsable = False
        for value in authorization:
            try:
                cred = parse_authorization(value)
            except DigestParseError:
                unparsable = True
                continue
            if cred.realm == self.realm:
                mine = cred
                break
        if mine is None:
            return self.challenge(reason="unparsable credentials" if unparsable else "no credentials")
        if mine.username != expected_user:
            return Forbidden("credentials for another user")
        password = self._password_for(mine.username)
        if password is None:
            return Forbidden("unknown user")
        alg = _canonical_algorithm(mine.algorithm)
        if alg is None or alg not in self.algorithms:
            return self.challenge(reason=f"algorithm {mine.algorithm[:20]!r} not offered")
        if mine.qop != "auth" or mine.nc is None or mine.cnonce is None:
            return self.challenge(reason="qop=auth required")
        age = self._nonce_age(mine.nonce)
        if age is None:
            return self.challenge(reason="nonce not ours")
        if not _response_ok(alg, mine, password, method):
            return Forbidden("wrong credentials")
        if age > self._ttl or age < 0:
            return self.challenge(stale=True, reason="stale nonce")
        if not self._fresh_nc(mine.nonce, int(mine.nc, 16)):
            return self.challenge(stale=True, reason="replayed nonce count")
        return Authenticated(mine.username)

    def _fresh_nc(self, nonce: str, nc: int) -> bool:
        with self._lock:
            last = self._nc_seen.get(nonce)
            if last is None:
                # Forgotten (or never seen): only a first use is acceptable, later counts could be replays.
                if nc != 1:
                    return False
            elif nc <= last:
                return False
            self._nc_seen[nonce] = nc
            self._nc_seen.move_to_end(nonce)
            while len(self._nc_seen) > self._max_tracked:
                self._nc_seen.popitem(last=False)
            return True


def _canonical_algorithm(name: str) -> str | None:
    for alg in ALGORITHMS:
        if alg.lower() == name.lower():
            return alg
    return None


def digest_response(
    algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str, nc: str,
    cnonce: str, qop: str,
) -> str:  # fmt: skip
    """The qop=auth ``response`` value (RFC 7616 §3.4.1); also what a client computes."""
    h = ALGORITHMS[algorithm]

    def hx(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = hx(f"{username}:{realm}:{password}")
    ha2 = hx(f"{method}:{uri}")
    return hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _response_ok(alg: str, cred: DigestCredentials, password: str, method: str) -> bool:
    assert cred.nc is not None and cred.cnonce is not None and cred.qop is not None
    want = digest_response(
        alg, cred.username, cred.realm, password, method, cred.uri, cred.nonce, cred.nc, cred.cnonce, cred.qop
    )
    return hmac.compare_digest(want.encode("ascii"), cred.response.lower().encode("utf-8", "replace"))


__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "AuthVerdict",
    "Authenticated",
    "Challenge",
    "DigestAuthenticator",
    "DigestCredentials",
    "DigestError",
    "DigestParseError",
    "Forbidden",
    "digest_response",
    "parse_authorization",
]
