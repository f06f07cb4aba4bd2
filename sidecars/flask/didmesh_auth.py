"""WSGI middleware that verifies didmesh JWTs before any view runs.

    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, issuer=..., audience=..., jwks_uri=...)

or, for Flask, `init_app(app, ...)`, which also puts the claims in `flask.g.claims`.

For each request:

* no `Authorization: Bearer` header -> the app runs with `environ["didmesh.claims"] = None`
  (another scheme, e.g. Basic, counts as no token, as in Envoy's jwt_authn);
* a token that verifies -> the app runs with the claims (a dict) there;
* a token that does not -> 401 with `WWW-Authenticate: Bearer error="invalid_token"`
  (RFC 6750 §3) and a JSON body; the app never sees the request;
* the network's keys cannot be fetched (and none are held) -> 503.

Verification: PyJWT, `alg` EdDSA only, signature by a key of the network's
JWKS (chosen by `kid`), `iss` and `aud` equal to the configured ones; `exp`,
`nbf`, `iat`, `iss`, `aud`, `sub` required; `exp`/`nbf`/`iat` checked with 60 s
of clock skew (the same as Envoy's `clock_skew_seconds`). On top of PyJWT,
which takes `int()` of whatever it finds: `exp`, `nbf`, `iat` must be JSON
integers, `exp` at most `max_token_lifetime` (24 h) after `iat` and after now,
and `sub` a DID (W3C DID Core §3.1) - so `exp = 2^64-1` or an empty `sub` is
refused.

JWKS caching (`JwksCache`, our own, because PyJWKClient's lifespan is fixed
and ignores the node's headers): a fetched set is used for the answer's
`Cache-Control: max-age` less its `Age` (RFC 9111 §4.2), bounded below by
`jwks_min_age` (5 s; so `max-age=0` cannot make us fetch per request) and
above by `jwks_max_age` (60 s); without `max-age`, for `jwks_refresh` (60 s,
also capped by `jwks_max_age`). So a removed member's key stops working within
`jwks_max_age` while the node is reachable. A stale set is refetched by the
first request that notices; concurrent requests go on with the current keys
meanwhile (stale-while-revalidate, RFC 5861 §3), and a failed refetch keeps
them and is retried after `jwks_min_age`. An unknown kid refetches at once
(one fetch at a time; waiters share it), but not within `refetch_cooldown`
seconds of the last fetch (so junk kids cannot make us hammer the node).

Revocation (issue 13): with `revocations_uri` (a node's `/v1/revocations`),
a daemon thread polls the network's signed revocation feed every
`revocations_interval` seconds (default 5), verifies each page's JWS with
PyJWT against the same JWKS (`typ` didmesh-revocations+jwt, `alg` EdDSA, a
`kid` of the JWKS - an unknown one refetches it - and `iss` the issuer), and
from then on refuses the tokens it revokes with 401 `invalid_token`, reason
"the token was revoked": a `did` entry (sub, `rev` < before; `iat` when the token has no `rev`), a `jti` entry,
a `key` entry (sub, the `key` claim, iat < before) and a `member` entry (the
token's header kid; `before` = u64::MAX at once, else from `before` on).
A page that does not verify is ignored; another feed id restarts from
cursor 0. So a revocation reaches this app within the poll interval plus
the node's propagation. Without `revocations_uri` the bound is the token
lifetime (900 s for a node's default access token).

A request cannot forge claims: they live under an environ key with a dot,
which no HTTP header can produce (headers arrive as HTTP_*).

Step-up (RFC 9470): a view that needs more than a valid token takes
`@require_mfa` (the token's `amr` has `mfa`: a login with two or more
factors) or `@require_authn(amr=..., acr=..., max_age=...)`. No token -> 401
`missing_token` with `WWW-Authenticate: Bearer`; a token that falls short ->
401 with `WWW-Authenticate: Bearer error="insufficient_user_authentication",
error_description="...", acr_values="urn:didmesh:acr:mfa"` (and `max_age="N"`
for a sign-in that is too old) and `{"error": "insufficient_user_authentication",
"reason": ...}` - the same answer as the Rust auth-layer's `RequireAuthn`.
`step_up_failure(claims, ...)` is the check alone, for a plain WSGI app.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import threading
import time
import urllib.request
from typing import Any, Callable, Iterable
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import jwt
from jwt.exceptions import PyJWKClientConnectionError

CLAIMS_KEY = "didmesh.claims"
CLOCK_SKEW_SECONDS = 60
MAX_TOKEN_LIFETIME = 24 * 3600
MAX_JWKS_BYTES = 1024 * 1024
# RFC 9111 §1.2.2: a delta-seconds too large to represent counts as 2^31.
DELTA_SECONDS_OVERFLOW = 2**31
# Never fresher than this, whatever the settings: no busy refetching.
MIN_FRESHNESS = 0.1
# W3C DID Core §3.1: "did:" method-name ":" method-specific-id.
_IDCHAR = r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})"
DID_RE = re.compile(rf"did:[a-z0-9]+:(?:{_IDCHAR}*:)*{_IDCHAR}+")
log = logging.getLogger(__name__)

# Issue 11: what a node writes about the login (RFC 8176 amr, didmesh acr).
AMR_MFA = "mfa"
ACR_1FA = "urn:didmesh:acr:1fa"
ACR_MFA = "urn:didmesh:acr:mfa"
# didmesh's acr levels, weakest first: a later one meets an earlier one.
ACR_LEVELS = (ACR_1FA, ACR_MFA)
INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"
# The error_description of each step-up reason (quoted-string safe).
STEP_UP_DESCRIPTIONS = {
    "mfa_required": "this resource requires a sign-in with two or more factors",
    "amr_required": "this resource requires another authentication method",
    "acr_required": "this resource requires a stronger authentication context",
    "auth_too_old": "this resource requires a more recent sign-in",
}
# RFC 6749 §A.4 NQCHAR without space: what may stand in a challenge's quotes.
_NQCHAR_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


def bearer_token(authorization: str | None) -> str | None:
    """What follows "Bearer " (any case, RFC 7235 §2.1), or None for no token."""
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else None


def is_did(value: Any) -> bool:
    return isinstance(value, str) and DID_RE.fullmatch(value) is not None


def _delta_seconds(text: str) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds: digits only."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return min(int(text), DELTA_SECONDS_OVERFLOW)


def max_age(headers) -> float | None:
    """The freshness an answer asks for: max-age less its Age (RFC 9111 §4.2.1,
    §4.2.3); 0 for no-store, no-cache, an unreadable or conflicting max-age;
    None without max-age. s-maxage is for shared caches (§5.2.2.10): ignored."""
    found: int | None = None
    stale = False
    for value in headers.get_all("Cache-Control") or []:
        for directive in value.split(","):
            name, eq, arg = directive.partition("=")
            name = name.strip().lower()
            if name in ("no-store", "no-cache"):
                stale = True
            elif name == "max-age":
                secs = _delta_seconds(arg.strip().strip('"')) if eq else None
                if secs is None or (found is not None and found != secs):
                    stale = True
                else:
                    found = secs
    if stale:
        return 0.0
    if found is None:
        return None
    age = _delta_seconds((headers.get("Age") or "").strip()) or 0
    return float(max(found - age, 0))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a JWKS is fetched from its URL only
        return None


class JwksCache:
    """The network's Ed25519 keys by kid, fresh as the module doc says. Thread-safe."""

    def __init__(
        self,
        uri: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5,
        max_age: float = 60,
        min_age: float = 5,
        refresh: float = 60,
        refetch_cooldown: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ):
        if urlparse(uri).scheme.lower() not in ("http", "https"):
            raise ValueError(f"the JWKS URI must be http(s): {uri!r}")
        self.uri = uri
        self.timeout = timeout
        self.ceiling = max_age
        self.floor = min_age
        self.refresh = refresh
        self.refetch_cooldown = refetch_cooldown
        self._clock = clock
        handlers: list[Any] = [_NoRedirect()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded = False
        self._fresh_until = float("-inf")  # stale: nothing fetched yet
        self._last_fetch: float | None = None  # start of the last attempt
        self._last_error = "not fetched yet"
        self.fetches = 0  # attempts, for tests and metrics
        self._lock = threading.Lock()  # held for a whole fetch: single flight

    def lifetime(self, asked: float | None) -> float:
        """Freshness of an answer: its max-age bounded both ways, or the
        configured refresh capped by the ceiling. The ceiling wins."""
        fresh = self.refresh if asked is None else max(asked, self.floor)
        return max(min(fresh, self.ceiling), MIN_FRESHNESS)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def get(self, kid: str) -> jwt.PyJWK:
        """The key for kid; jwt.InvalidTokenError if the JWKS has none,
        PyJWKClientConnectionError if no JWKS could ever be fetched."""
        self._revalidate_if_stale()
        key = self._keys.get(kid)
        if key is None:
            self._refetch_for_unknown_kid()
            key = self._keys.get(kid)
        if key is None:
            raise jwt.InvalidTokenError("the token was signed by an unknown key")
        return key

    def _revalidate_if_stale(self) -> None:
        if self._clock() < self._fresh_until:
            if not self._loaded:
                raise PyJWKClientConnectionError(f"cannot fetch the JWKS: {self._last_error}")
            return
        if self._loaded:
            # Someone else is refetching: go on with the keys we have.
            if not self._lock.acquire(blocking=False):
                return
        else:
            self._lock.acquire()
        try:
            if self._clock() < self._fresh_until:  # refetched while we waited
                if not self._loaded:
                    raise PyJWKClientConnectionError(f"cannot fetch the JWKS: {self._last_error}")
                return
            self._fetch_keeping_old_keys("refresh")
        finally:
            self._lock.release()

    def _refetch_for_unknown_kid(self) -> None:
        seen = self.fetches
        with self._lock:
            if self.fetches != seen:  # fetched while we queued: as fresh as ours would be
                return
            if self._last_fetch is not None and self._clock() - self._last_fetch < self.refetch_cooldown:
                return
            self._fetch_keeping_old_keys("refetch for an unknown kid")

    def _fetch_keeping_old_keys(self, what: str) -> None:
        """Fetch (lock held); on failure keep the keys we have, if any."""
        try:
            self._fetch_locked()
        except PyJWKClientConnectionError as err:
            if not self._loaded:
                raise
            log.warning("JWKS %s failed, keeping the old keys: %s", what, err)

    def _fetch_locked(self) -> None:
        """Fetch and swap in the keys; the caller holds the lock."""
        started = self._clock()  # freshness counts from the request (RFC 9111 §4.2.3)
        self._last_fetch = started
        self.fetches += 1
        try:
            keys, asked = self._download()
        except PyJWKClientConnectionError as err:
            # Retry after the floor, but never make fresh keys stale earlier.
            retry = max(min(self.floor, self.ceiling), MIN_FRESHNESS)
            self._fresh_until = max(self._fresh_until, self._clock() + retry)
            self._last_error = str(err)
            raise
        self._keys = keys
        self._loaded = True
        self._fresh_until = started + self.lifetime(asked)

    def _download(self) -> tuple[dict[str, jwt.PyJWK], float | None]:
        request = urllib.request.Request(self.uri, headers={"Accept": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(MAX_JWKS_BYTES + 1)
                asked = max_age(response.headers)
        except (URLError, TimeoutError, http.client.HTTPException, OSError) as err:
            if isinstance(err, HTTPError):
                err.close()
            raise PyJWKClientConnectionError(f"cannot fetch the JWKS: {err}") from err
        if len(body) > MAX_JWKS_BYTES:
            raise PyJWKClientConnectionError("the JWKS is too large")
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise PyJWKClientConnectionError(f"the JWKS is not JSON: {err}") from err
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise PyJWKClientConnectionError("the JWKS has no keys list")
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in doc["keys"]:
            # Ed25519 signing keys only (RFC 8037 §2); anything else is ignored.
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            if not isinstance(kid, str) or kid in keys:  # a duplicate kid: keep the first
                continue
            try:
                keys[kid] = jwt.PyJWK(jwk, algorithm="EdDSA")
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue
        return keys, asked


FEED_TYP = "didmesh-revocations+jwt"
MAX_FEED_PAGE_BYTES = 8 * 1024 * 1024
U64_MAX = 2**64 - 1


class RevokedTokenError(jwt.InvalidTokenError):
    """The network's revocation feed revoked this token."""

    def __init__(self):
        super().__init__("the token was revoked")


def _u64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


class RevocationFeed:
    """Follows a node's signed revocation feed by polling it (module doc).

    `poll_once()` asks for the entries after the cursor (wait=0) and applies
    a page that verifies; `start()` runs it every `interval` seconds on a
    daemon thread; `revoked(claims, kid, now)` is the check. Thread-safe:
    pages swap in new dicts, readers never wait for a poll."""

    def __init__(
        self,
        uri: str,
        keys: JwksCache,
        issuer: str,
        *,
        interval: float = 5,
        timeout: float = 5,
        horizon: float = MAX_TOKEN_LIFETIME + CLOCK_SKEW_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if urlparse(uri).scheme.lower() not in ("http", "https"):
            raise ValueError(f"the revocation feed URI must be http(s): {uri!r}")
        self.uri = uri
        self.keys = keys
        self.issuer = issuer
        self.interval = interval
        self.timeout = timeout
        self.horizon = horizon
        self._clock = clock
        handlers: list[Any] = [_NoRedirect()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        self.feed: str | None = None
        self.cursor = 0
        self.pages = 0
        self.bad_pages = 0
        self.last_ok: float | None = None  # wall clock of the last good answer
        # jti -> exp; did -> before; did -> {key: before}; kid -> before
        self._jti: dict[str, int] = {}
        self._did: dict[str, int] = {}
        self._key: dict[str, dict[str, int]] = {}
        self._member: dict[str, int] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the check -------------------------------------------------------------
    def revoked(self, claims: dict[str, Any], kid: str | None, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        before = self._member.get(kid) if isinstance(kid, str) else None
        if before is not None and (before == U64_MAX or now >= before):
            return True
        if claims.get("jti") in self._jti:
            return True
        sub, iat = claims.get("sub"), claims.get("iat")
        if type(iat) is not int:
            return False
        did_before = self._did.get(sub)
        # `rev`: the DID's revocation watermark the issuing node held (no
        # clock involved); tokens of older nodes have none, `iat` stands in.
        rev = claims.get("rev", iat)
        if type(rev) is not int:
            rev = iat
        if did_before is not None and rev < did_before:
            return True
        key = claims.get("key")
        key_before = self._key.get(sub, {}).get(key) if isinstance(key, str) else None
        return key_before is not None and iat < key_before

    # -- polling ---------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Poll every `interval` seconds on a daemon thread until stop()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="didmesh-revocations", daemon=True)
            self._thread.start()
            log.info("following the revocation feed %s every %ss", self.uri, self.interval)
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                # Drain: a full page may be followed by more.
                while self.poll_once() and not self._stop.is_set():
                    pass
                if failing:
                    log.info("revocation feed reachable again")
                failing = False
            except Exception as err:  # noqa: BLE001 - the thread must survive anything
                (log.debug if failing else log.warning)("revocation feed: %s; retrying", err)
                failing = True
            self._stop.wait(self.interval)

    def poll_once(self) -> bool:
        """One poll. True if a page with new entries was applied (poll again
        at once); False if nothing was new. Raises on a failed fetch; a page
        that does not verify is counted in bad_pages and ignored."""
        with self._poll_lock:
            body = self._fetch(self.cursor)
            try:
                page = self._verify_page(body)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as err:
                self.bad_pages += 1
                log.warning("revocation feed page refused: %s", err)
                return False
            if page["feed"] != self.feed:
                if self.feed is not None or self.cursor != 0:
                    log.info("revocation feed id changed (%s -> %s): restarting from 0", self.feed, page["feed"])
                self.feed = page["feed"]
                if page["since"] != 0:
                    self.cursor = 0
                    return True
            elif page["since"] != self.cursor or page["cursor"] < page["since"]:
                self.bad_pages += 1
                log.warning("revocation feed page does not continue cursor %s; ignored", self.cursor)
                return False
            entries = page["entries"]
            if entries:
                self._apply(entries)
                log.info("revocation entries applied: %d new, cursor %d, lag %ds", len(entries),
                         page["cursor"], max(0, int(self._clock()) - page["iat"]))
            self.cursor = page["cursor"]
            self.pages += 1
            self.last_ok = self._clock()
            return bool(entries) and page["cursor"] > page["since"]

    def _fetch(self, since: int) -> bytes:
        sep = "&" if "?" in self.uri else "?"
        request = urllib.request.Request(f"{self.uri}{sep}since={since}&wait=0",
                                         headers={"Accept": "application/jwt"})
        with self._opener.open(request, timeout=self.timeout) as response:
            body = response.read(MAX_FEED_PAGE_BYTES + 1)
        if len(body) > MAX_FEED_PAGE_BYTES:
            raise ValueError("revocation feed page too large")
        return body

    def _verify_page(self, body: bytes) -> dict[str, Any]:
        jws = body.decode().strip()
        header = jwt.get_unverified_header(jws)
        if header.get("alg") != "EdDSA" or header.get("typ") != FEED_TYP:
            raise jwt.InvalidTokenError(f"not a revocation feed page (alg EdDSA, typ {FEED_TYP})")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("no kid in the page header")
        key = self.keys.get(kid)  # an unknown kid refetches the JWKS
        payload = jwt.api_jws.decode_complete(jws, key, algorithms=["EdDSA"])["payload"]
        page = json.loads(payload)
        if not isinstance(page, dict) or page.get("iss") != self.issuer:
            raise jwt.InvalidIssuerError("the page is not from this network's issuer")
        if not isinstance(page.get("feed"), str) or not all(_u64(page.get(k)) for k in ("since", "cursor", "iat")):
            raise ValueError("page fields feed/since/cursor/iat missing or not integers")
        if not isinstance(page.get("entries"), list):
            raise ValueError("page entries is not a list")
        return page

    def _apply(self, entries: list[Any]) -> None:
        jti, did, keyed, member = dict(self._jti), dict(self._did), {d: dict(k) for d, k in self._key.items()}, dict(self._member)
        for e in entries:
            if not isinstance(e, dict):
                continue
            kind = e.get("kind")
            if kind == "did" and isinstance(e.get("did"), str) and _u64(e.get("before")):
                did[e["did"]] = max(did.get(e["did"], 0), e["before"])
            elif kind == "jti" and isinstance(e.get("jti"), str) and _u64(e.get("exp")):
                jti[e["jti"]] = max(jti.get(e["jti"], 0), e["exp"])
            elif kind == "key" and isinstance(e.get("did"), str) and isinstance(e.get("key"), str) and _u64(e.get("before")):
                slot = keyed.setdefault(e["did"], {})
                slot[e["key"]] = max(slot.get(e["key"], 0), e["before"])
            elif kind == "member" and isinstance(e.get("kids"), list) and _u64(e.get("before")):
                for kid in e["kids"]:
                    if not isinstance(kid, str):
                        continue
                    old = member.get(kid)
                    # The earliest refusal wins; a removal (u64::MAX: at once) stays.
                    if old is None:
                        member[kid] = e["before"]
                    elif old == U64_MAX or e["before"] == U64_MAX:
                        member[kid] = U64_MAX
                    else:
                        member[kid] = min(old, e["before"])
            # other kinds: from a newer node, skipped
        now = self._clock()
        jti = {k: v for k, v in jti.items() if v + self.horizon > now}
        did = {k: v for k, v in did.items() if v + self.horizon > now}
        keyed = {d: {k: b for k, b in ks.items() if b + self.horizon > now} for d, ks in keyed.items()}
        keyed = {d: ks for d, ks in keyed.items() if ks}
        self._jti, self._did, self._key, self._member = jti, did, keyed, member


class BearerAuthMiddleware:
    def __init__(
        self,
        app: Callable,
        *,
        issuer: str,
        audience: str,
        jwks_uri: str,
        jwks_ca: str | None = None,
        jwks_max_age: float = 60,
        jwks_min_age: float = 5,
        jwks_refresh: float = 60,
        refetch_cooldown: float = 10,
        max_token_lifetime: int = MAX_TOKEN_LIFETIME,
        revocations_uri: str | None = None,
        revocations_interval: float = 5,
    ):
        self.app = app
        self.issuer = issuer
        self.audience = audience
        self.max_token_lifetime = max_token_lifetime
        self.keys = JwksCache(
            jwks_uri,
            ssl_context=ssl.create_default_context(cafile=jwks_ca) if jwks_ca else None,
            max_age=jwks_max_age,
            min_age=jwks_min_age,
            refresh=jwks_refresh,
            refetch_cooldown=refetch_cooldown,
        )
        self.revocations: RevocationFeed | None = None
        if revocations_uri:
            self.revocations = RevocationFeed(
                revocations_uri,
                self.keys,
                issuer,
                interval=revocations_interval,
                horizon=max_token_lifetime + CLOCK_SKEW_SECONDS,
                ssl_context=ssl.create_default_context(cafile=jwks_ca) if jwks_ca else None,
            )
            self.revocations.start()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or a jwt.PyJWTError saying why not."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "EdDSA":
            # Before the key lookup: alg none / HS256 never reach a key.
            raise jwt.InvalidAlgorithmError(f"alg {header.get('alg')!r} is not EdDSA")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("no kid in the token header")
        key = self.keys.get(kid)
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer=self.issuer,
            audience=self.audience,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"], "verify_iat": True},
        )
        self.check_claims(claims, time.time())
        if self.revocations is not None and self.revocations.revoked(claims, kid):
            raise RevokedTokenError()
        return claims

    def check_claims(self, claims: dict[str, Any], now: float) -> None:
        """What PyJWT does not check (it takes int() of any number or numeric string)."""
        for name in ("exp", "nbf", "iat"):
            value = claims[name]
            if type(value) is not int or value < 0:  # bool is an int subclass: refused too
                raise jwt.InvalidTokenError(f"{name} must be a non-negative integer")
        if not is_did(claims["sub"]):
            raise jwt.InvalidTokenError("sub must be a DID")
        exp, iat = claims["exp"], claims["iat"]
        if iat > now + CLOCK_SKEW_SECONDS:
            raise jwt.ImmatureSignatureError("the token was issued in the future (iat)")
        if exp - iat > self.max_token_lifetime or exp > now + self.max_token_lifetime + CLOCK_SKEW_SECONDS:
            raise jwt.InvalidTokenError("the token lifetime is too long (exp)")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ[CLAIMS_KEY] = None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is not None:
            try:
                environ[CLAIMS_KEY] = self.verify(token)
            except PyJWKClientConnectionError as err:
                log.error("jwks unavailable: %s", err)
                return _json(start_response, "503 Service Unavailable",
                             {"error": "temporarily_unavailable", "reason": "cannot fetch the network's keys"})
            except jwt.PyJWTError as err:
                return _json(start_response, "401 Unauthorized", {"error": "invalid_token", "reason": str(err)},
                             [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        return self.app(environ, start_response)


def _json(start_response: Callable, status: str, body: dict, headers: list | None = None) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(headers or [])])
    return [data]


def _acr_meets(claims: dict[str, Any], want: str) -> bool:
    """The token's acr (absent: one factor, as tokens before issue 11) is
    `want`, or a higher didmesh level."""
    have = claims.get("acr", ACR_1FA)
    if not isinstance(have, str):
        return False
    if have == want:
        return True
    return have in ACR_LEVELS and want in ACR_LEVELS and ACR_LEVELS.index(have) >= ACR_LEVELS.index(want)


def step_up_failure(
    claims: dict[str, Any],
    *,
    amr: Iterable[str] = (),
    acr: Iterable[str] = (),
    max_age: int | None = None,
    now: float | None = None,
) -> str | None:
    """Why verified `claims` do not meet a step-up requirement (a reason
    code of STEP_UP_DESCRIPTIONS), or None when they do. Every method of
    `amr` must be in the token's amr list; the token's acr must meet one of
    `acr`; auth_time must be at most `max_age` seconds ago."""
    methods = claims.get("amr")
    # A list of strings or nothing: "mfa" in "nomfa" must not count.
    have = set(methods) if isinstance(methods, list) and all(isinstance(m, str) for m in methods) else set()
    for method in amr:
        if method not in have:
            return "mfa_required" if method == AMR_MFA else "amr_required"
    acr = list(acr)
    if acr and not any(_acr_meets(claims, want) for want in acr):
        return "acr_required"
    if max_age is not None:
        auth_time = claims.get("auth_time")
        now = time.time() if now is None else now
        if type(auth_time) is not int or auth_time + max_age + CLOCK_SKEW_SECONDS < now:
            return "auth_too_old"
    return None


def step_up_challenge(reason: str, acr_values: Iterable[str] = (), max_age: int | None = None) -> str:
    """The RFC 9470 §3 WWW-Authenticate value for a step-up `reason`."""
    value = f'Bearer error="{INSUFFICIENT_USER_AUTHENTICATION}", error_description="{STEP_UP_DESCRIPTIONS[reason]}"'
    hint = " ".join(v for v in acr_values if _NQCHAR_TOKEN.fullmatch(v))
    if hint:
        value += f', acr_values="{hint}"'
    if max_age is not None:
        value += f', max_age="{int(max_age)}"'
    return value


def require_authn(*, amr: Iterable[str] = (), acr: Iterable[str] = (), max_age: int | None = None):
    """Decorator for a Flask view that needs more than a valid token (module
    doc). `acr_values` of the challenge: `acr` when given, else
    urn:didmesh:acr:mfa when `amr` has mfa."""
    import functools

    import flask

    amr, acr = tuple(amr), tuple(acr)
    hint = acr or ((ACR_MFA,) if AMR_MFA in amr else ())

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            claims = flask.request.environ.get(CLAIMS_KEY)
            if claims is None:
                return flask.Response(
                    json.dumps({"error": "missing_token", "reason": "no_token"}), 401,
                    {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"})
            reason = step_up_failure(claims, amr=amr, acr=acr, max_age=max_age)
            if reason is not None:
                body: dict[str, Any] = {"error": INSUFFICIENT_USER_AUTHENTICATION, "reason": reason}
                values = " ".join(v for v in hint if _NQCHAR_TOKEN.fullmatch(v))
                if values:
                    body["acr_values"] = values
                if max_age is not None:
                    body["max_age"] = int(max_age)
                return flask.Response(
                    json.dumps(body), 401,
                    {"Content-Type": "application/json",
                     "WWW-Authenticate": step_up_challenge(reason, hint, max_age)})
            return view(*args, **kwargs)

        return wrapper

    return decorate


def require_mfa(view):
    """`@require_mfa`: the view needs a login with two or more factors
    (`amr` has `mfa`); the challenge names acr_values="urn:didmesh:acr:mfa"."""
    return require_authn(amr=(AMR_MFA,))(view)


def init_app(app, **settings) -> None:
    """Verify tokens for a Flask app; views read `flask.g.claims` (None: no token)."""
    import flask

    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, **settings)

    @app.before_request
    def _claims_to_g() -> None:
        flask.g.claims = flask.request.environ.get(CLAIMS_KEY)
