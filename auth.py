"""The one check of a bearer token issued by the shop's users service."""

import collections
import dataclasses
import re
import threading
import time
import uuid

import jwt

SUBJECT_PREFIX = "UUID:"
ACCESS_TOKEN_TYPE = "access"

# A token whose `scope` lists this may fulfil orders and read everyone's.
STAFF_SCOPE = "orders:fulfil"

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")

# RFC 7518 asks for a key at least as long as the hash: 512 bits for HS512.
MIN_SECRET_BYTES = 64

MAX_LEEWAY_S = 60
TIME_CLAIMS = ("exp", "nbf", "iat")
TOKEN_LIFETIME_S = 15 * 60

# Tokens already verified, per process. A client sends one token with
# many requests; checking its signature and claims once is enough, as
# long as its expiry is still checked on every use.
VERIFIED_TOKENS_KEPT = 4096

# The scheme, one space, then a token68 (RFC 7235). The scheme is matched
# without regard to case; anything else (no scheme, two spaces, a comma,
# a trailing space) is refused.
_AUTHORIZATION = re.compile(r"([A-Za-z]+) ([A-Za-z0-9\-._~+/]+=*)")
_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class TokenSettings:
    """What a token must satisfy. `secrets` are tried in order."""

    secrets: tuple
    audience: str = "shop-example"
    issuer: str = "docs_users"
    algorithms: tuple = ("HS512",)
    leeway_s: int = 5


@dataclasses.dataclass(frozen=True)
class User:
    """The caller a valid token names."""

    uuid: str
    is_staff: bool


class TokenRefused(Exception):
    """The request carries no acceptable token.

    `reason` is safe to log: it never holds the token or a claim's value.
    `token_sent` tells whether the request carried credentials at all.
    """

    def __init__(self, reason, token_sent=True):
        super().__init__(reason)
        self.reason = reason
        self.token_sent = token_sent


def is_canonical_uuid(text):
    """Tell whether `text` is a UUID in its 8-4-4-4-12 hexadecimal form."""
    return isinstance(text, str) and _CANONICAL_UUID.fullmatch(text) is not None


def check_bearer_token(authorization, settings):
    """Return the User that an `Authorization` header value proves.

    Accepts only `Bearer <JWT>` signed with one of `settings.secrets`
    under an allowed HMAC algorithm, unexpired and already valid, for our
    audience and issuer, of type `access`, whose `sub` is `UUID:<uuid>`.
    Raises TokenRefused otherwise. Never fetches anything a token's
    header points at (`jku`, `x5u`, `kid` are ignored).
    """
    if not authorization:
        raise TokenRefused("no Authorization header", token_sent=False)

    match = _AUTHORIZATION.fullmatch(authorization)
    if match is None or match.group(1).lower() != "bearer":
        raise TokenRefused("Authorization header is not 'Bearer <token>'")
    token = match.group(2)

    remembered = _verified_tokens.get(settings, token)
    if remembered is not None:
        return remembered

    user, expires_at = _user_from_claims(_decode(token, settings))
    _verified_tokens.put(settings, token, user, expires_at)
    return user


def _user_from_claims(claims):
    """Return (User, expiry) from verified claims, or raise TokenRefused."""
    if claims.get("typ") != ACCESS_TOKEN_TYPE:
        raise TokenRefused("typ claim is not 'access'")

    subject = claims["sub"]
    user_uuid = subject[len(SUBJECT_PREFIX) :]
    if not subject.startswith(SUBJECT_PREFIX) or not is_canonical_uuid(user_uuid):
        raise TokenRefused("sub claim is not 'UUID:<uuid>'")

    scope = claims.get("scope", "")
    # Scopes are separated by single spaces (RFC 6749), nothing else.
    is_staff = isinstance(scope, str) and STAFF_SCOPE in scope.split(" ")
    return User(uuid=user_uuid.lower(), is_staff=is_staff), claims["exp"]


class _VerifiedTokens:
    """The users of recently verified tokens, until each token expires.

    Keyed by the settings too, so a token verified under one secret or
    audience is never taken as verified under another. Holds at most
    VERIFIED_TOKENS_KEPT tokens, forgetting the oldest first.
    """

    def __init__(self):
        self._users = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings, token):
        with self._lock:
            entry = self._users.get((settings, token))
        if entry is None:
            return None

        user, expires_at = entry
        if time.time() > expires_at + settings.leeway_s:
            with self._lock:
                self._users.pop((settings, token), None)
            raise TokenRefused("expired")
        return user

    def put(self, settings, token, user, expires_at):
        with self._lock:
            self._users[(settings, token)] = (user, expires_at)
            while len(self._users) > VERIFIED_TOKENS_KEPT:
                self._users.popitem(last=False)


_verified_tokens = _VerifiedTokens()


def _decode(token, settings):
    options = {"require": ["exp", "aud", "iss", "sub"]}

    for secret in settings.secrets:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options=options,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as error:
            raise TokenRefused(_reason(error)) from None

        # PyJWT compares the issuer whole since 2.10.1; say so here too,
        # since a fragment of our issuer must never pass for it.
        if claims["iss"] != settings.issuer:
            raise TokenRefused("wrong issuer")
        # PyJWT takes "123" for a time; RFC 7519 asks for a number, and
        # the verified-token cache compares `exp` with numbers.
        if not all(_is_number(claims.get(name, 0)) for name in TIME_CLAIMS):
            raise TokenRefused("a time claim is not a number")
        return claims

    raise TokenRefused("signature does not match any configured secret")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reason(error):
    reasons = {
        jwt.ExpiredSignatureError: "expired",
        jwt.ImmatureSignatureError: "not yet valid (nbf or iat in the future)",
        jwt.InvalidAudienceError: "wrong audience",
        jwt.InvalidIssuerError: "wrong issuer",
        jwt.MissingRequiredClaimError: "a required claim is missing",
        jwt.InvalidAlgorithmError: "algorithm not allowed",
        jwt.DecodeError: "not a well-formed JWT",
    }
    for error_class, reason in reasons.items():
        if isinstance(error, error_class):
            return reason
    return f"invalid ({type(error).__name__})"


def mint_token(user_uuid, secret, settings, staff=False, lifetime_s=TOKEN_LIFETIME_S):
    """Return a token for `user_uuid` as the users service would issue it.

    For trying the service and for tests; the service itself never
    issues tokens. `staff=True` adds the staff scope.
    """
    now = int(time.time())
    claims = {
        "sub": SUBJECT_PREFIX + user_uuid,
        "aud": settings.audience,
        "iss": settings.issuer,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": str(uuid.uuid4()),
        "typ": ACCESS_TOKEN_TYPE,
    }
    if staff:
        claims["scope"] = STAFF_SCOPE
    return jwt.encode(claims, secret, algorithm=settings.algorithms[0])
