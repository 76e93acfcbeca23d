"""Bearer-token verification against an OpenID Connect realm (Keycloak, Azure AD, Auth0, Dex, ...).

Keys come from the realm: its discovery document ``<realm>/.well-known/openid-configuration`` names
the ``jwks_uri`` (any standard IdP), and a Keycloak realm document ``<realm>`` carries the realm's
``public_key`` (what MONAI Label reads). Keys are cached; a token signed with a key id the cache
doesn't know makes one refresh (rotation), bounded so that made-up key ids can't flood the IdP; all
keys are fetched again after an hour (how a realm read without JWKS picks up a new key). The
realm is only ever asked with a timeout: an unreachable IdP fails calls UNAVAILABLE, it never hangs
them.

A token is accepted only with an asymmetric signature (``none`` and HMAC algorithms are refused: an
HMAC "signed" with the public key would otherwise verify), a valid ``exp``, ``nbf`` and ``iss``, and
the configured ``aud`` when there is one.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, FrozenSet, Optional, Tuple

import jwt
from cryptography.hazmat.primitives.serialization import load_der_public_key

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.auth.settings import AuthSettings

__all__ = ["Identity", "RealmKeys", "TokenVerifier", "ACCEPTED_ALGORITHMS"]

logger = logging.getLogger(__name__)

#: Signature algorithms a token may use: public-key ones only.
ACCEPTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_MAX_DOCUMENT_BYTES = 1 << 20
_KEYS_MAX_AGE_S = 3600.0  # keys are fetched again after this, so that a removed key stops working
_REFRESH_WINDOW_S = 60.0  # at most _REFRESHES_PER_WINDOW refreshes for unknown key ids per window
_REFRESHES_PER_WINDOW = 10


@dataclass(frozen=True)
class Identity:
    """Who made a call, from a verified token.

    Attributes:
        username: the user name (``MONAI_LABEL_AUTH_TOKEN_USERNAME``, else ``sub``).
        email: the e-mail address, if the token has one.
        name: the display name, if the token has one.
        roles: the role names the token holds.
        subject: the token's ``sub``.
    """

    username: str
    email: str = ""
    name: str = ""
    roles: FrozenSet[str] = frozenset()
    subject: str = ""


def _unauthenticated(msg: str, reason: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.UNAUTHENTICATED, msg, reason=reason)


def _unavailable(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.UNAVAILABLE, msg, reason="IDP_UNAVAILABLE", retry_after_s=5.0)


class _Unreachable(Exception):
    """The realm did not answer (network error, timeout, server error)."""


@dataclass
class _KeySet:
    by_kid: Dict[str, jwt.PyJWK]
    realm_key: Any  # the Keycloak realm's public key (no key id), or None
    issuer: str
    fetched: float


class RealmKeys:
    """The realm's signing keys, fetched on first use and cached.

    Args:
        settings: the auth settings (realm URI, timeout, issuer override).
        clock: returns the current time in seconds (monotonic).
    """

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.realm = settings.realm_uri.rstrip("/")
        self.timeout = settings.timeout
        self.issuer_override = settings.issuer
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Optional[_KeySet] = None
        self._refreshes: Deque[float] = collections.deque()
        self._failure: Optional[Tuple[float, str]] = None  # (clock, message) of the last failed fetch

    def issuer(self) -> str:
        """The issuer tokens must name (loads the keys if needed)."""
        return self._current().issuer

    def key_for(self, kid: Optional[str]) -> Any:
        """Returns the public key that signs tokens with key id ``kid`` (None: a token without one).

        Raises:
            MONAILabelException: UNAUTHENTICATED for a key the realm doesn't publish, UNAVAILABLE when
                the realm can't be reached and no keys are cached.
        """
        keys = self._current()
        found = self._lookup(keys, kid)
        if found is None and self._may_refresh(keys):
            keys = self._load(seen=keys)
            found = self._lookup(keys, kid)
        if found is None:
            raise _unauthenticated(
                f"token signing key {kid!r} is not published by the realm" if kid else
                "token names no key id and the realm has no single key to try",
                "UNKNOWN_SIGNING_KEY",
            )
        return found

    # -- internals ---------------------------------------------------------------------------------
    @staticmethod
    def _lookup(keys: _KeySet, kid: Optional[str]) -> Any:
        if kid and kid in keys.by_kid:
            return keys.by_kid[kid].key
        if kid and keys.by_kid:
            return None  # the realm publishes key ids and not this one
        if keys.realm_key is not None:
            # a Keycloak realm read without JWKS: MONAI Label's way, one key whatever the kid says
            return keys.realm_key
        if not kid and len(keys.by_kid) == 1:
            return next(iter(keys.by_kid.values())).key
        return None

    def _current(self) -> _KeySet:
        keys = self._keys
        if keys is None:
            return self._load(seen=None)
        if self._clock() - keys.fetched > _KEYS_MAX_AGE_S:
            try:
                return self._load(seen=keys)
            except MONAILabelException as exc:  # keep serving with the keys we have
                logger.warning("keeping cached realm keys: %s", exc)
        return keys

    def _may_refresh(self, keys: _KeySet) -> bool:
        now = self._clock()
        with self._lock:
            if self._keys is not keys:  # another call refreshed meanwhile: look there first
                return True
            while self._refreshes and now - self._refreshes[0] > _REFRESH_WINDOW_S:
                self._refreshes.popleft()
            if len(self._refreshes) >= _REFRESHES_PER_WINDOW:
                return False
            self._refreshes.append(now)
            return True

    def _load(self, seen: Optional[_KeySet]) -> _KeySet:
        """Fetches the keys, unless a concurrent call already replaced ``seen``.

        Calls that waited while another one's fetch failed share its failure instead of each waiting
        for a timeout of their own, so a realm that is down costs every call at most one timeout.
        """
        waiting_since = self._clock()
        with self._lock:
            if self._keys is not None and self._keys is not seen:
                return self._keys
            if self._failure is not None and self._failure[0] >= waiting_since:
                raise _unavailable(self._failure[1])
            try:
                keys = self._fetch()
            except _Unreachable as exc:
                self._failure = (self._clock(), f"identity provider unreachable: {exc}")
                raise _unavailable(self._failure[1]) from None
            self._keys = keys
            logger.info("realm keys loaded: %d by key id%s", len(keys.by_kid),
                        ", plus the realm public key" if keys.realm_key is not None else "")
            return keys

    def _fetch(self) -> _KeySet:
        discovery = self._get_json(f"{self.realm}/.well-known/openid-configuration")
        by_kid: Dict[str, jwt.PyJWK] = {}
        jwks_uri = (discovery or {}).get("jwks_uri")
        if isinstance(jwks_uri, str) and jwks_uri:
            for data in (self._get_json(jwks_uri) or {}).get("keys") or []:
                jwk = _public_jwk(data)
                if jwk is not None:
                    by_kid[str(data["kid"])] = jwk
        realm_key = None
        try:
            realm_doc = self._get_json(self.realm)
        except _Unreachable:
            if not by_kid:
                raise
            realm_doc = None  # an OIDC-only IdP: its realm URL need not answer at all
        public_key = (realm_doc or {}).get("public_key")
        if isinstance(public_key, str) and public_key:
            try:
                realm_key = load_der_public_key(base64.b64decode(public_key))
            except ValueError:
                logger.warning("the realm document's public_key does not parse; ignored")
        if not by_kid and realm_key is None:
            raise _Unreachable("the realm publishes no signing keys (no jwks_uri keys, no public_key)")
        issuer = self.issuer_override or str((discovery or {}).get("issuer") or self.realm)
        return _KeySet(by_kid, realm_key, issuer, self._clock())

    def _get_json(self, url: str) -> Optional[Dict[str, Any]]:
        """GETs a JSON document; None when there is none (404, not JSON); _Unreachable on failure."""
        if not url.startswith(("http://", "https://")):
            raise _Unreachable(f"not an http(s) URL: {url}")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                body = response.read(_MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise _Unreachable(f"{url} answered HTTP {exc.code}") from None
            return None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(f"{url}: {reason}") from None
        if len(body) > _MAX_DOCUMENT_BYTES:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def _public_jwk(data: Any) -> Optional[jwt.PyJWK]:
    """A JWKS entry as a key, or None for one that can't verify our tokens (symmetric, no kid, ...)."""
    if not isinstance(data, dict) or not data.get("kid") or data.get("kty") == "oct":
        return None
    if data.get("use", "sig") != "sig" or data.get("alg", "RS256") not in ACCEPTED_ALGORITHMS:
        return None
    try:
        return jwt.PyJWK(data)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        logger.warning("skipping a JWKS key that does not parse (kid %s)", data.get("kid"))
        return None


class TokenVerifier:
    """Verifies bearer tokens and reads the caller's identity from them.

    Args:
        settings: the auth settings.
        keys: the realm's keys (default: fetched from ``settings.realm_uri``).
    """

    def __init__(self, settings: AuthSettings, keys: Optional[RealmKeys] = None) -> None:
        self.settings = settings
        self.keys = keys or RealmKeys(settings)
        self._role_path = [p for p in settings.token_roles.split("#") if p]

    def verify(self, token: str) -> Identity:
        """Checks a token and returns who it names.

        Raises:
            MONAILabelException: UNAUTHENTICATED for a malformed, unsigned, badly signed, expired,
                not yet valid, foreign or misaddressed token; UNAVAILABLE when the realm can't be reached.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("the bearer token is not a well-formed JWT", "TOKEN_MALFORMED") from None
        alg = header.get("alg")
        if alg not in ACCEPTED_ALGORITHMS:
            raise _unauthenticated(f"token algorithm {alg!r} is not accepted", "TOKEN_ALGORITHM")
        kid = header.get("kid")
        key = self.keys.key_for(str(kid) if kid is not None else None)
        audience = self.settings.audience or None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.keys.issuer(),
                audience=audience,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("token has expired", "TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("token is not valid yet (nbf/iat in the future)", "TOKEN_NOT_YET_VALID") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("token was issued by another realm", "TOKEN_ISSUER") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("token is meant for another audience", "TOKEN_AUDIENCE") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"token lacks the {exc.claim!r} claim", "TOKEN_CLAIM") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("token signature does not verify", "TOKEN_SIGNATURE") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # wrong key type for alg, bad claims ...
            raise _unauthenticated(f"token rejected ({type(exc).__name__})", "TOKEN_INVALID") from None
        return self.identity_of(claims)

    def identity_of(self, claims: Dict[str, Any]) -> Identity:
        """Reads user name, e-mail, name and roles from verified claims."""
        s = self.settings
        username = claims.get(s.token_username) or claims.get("sub")
        if not isinstance(username, str) or not username:
            raise _unauthenticated(f"token names no user ({s.token_username!r} or 'sub')", "TOKEN_CLAIM")
        value: Any = claims
        for part in self._role_path:
            value = value.get(part) if isinstance(value, dict) else None
        roles = frozenset(r for r in value if isinstance(r, str)) if isinstance(value, list) else frozenset()
        return Identity(
            username=username,
            email=str(claims.get(s.token_email) or ""),
            name=str(claims.get(s.token_name) or ""),
            roles=roles,
            subject=str(claims.get("sub") or ""),
        )
