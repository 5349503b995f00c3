"""Grip-Sig: the JWT a GRIP proxy signs each origin request with, and its validation.

The proxy proves to the origin that a request came through it by adding `Grip-Sig: <JWT>` with
claims exactly `iss` (the route's `sig_iss`, default `pushpin`) and `exp = now + 3600`: no `iat`,
`aud` or `nbf`, as Pushpin does. The algorithm follows the key type: a shared secret signs with
HS256, an EC P-256 private key with ES256 (Fastly Fanout's choice, `iss` = `fastly:<service-id>`),
an RSA private key with RS256. The same checks serve the other direction, `upstream_key`: a
request that arrives already signed by a trusted upstream proxy (Fanout in front of us, or another
Pushpin) is passed through; GRIP asks that an invalid signature be treated as an absent one.

Strategy:

* Keys are parsed once, from Pushpin's key spec strings (`base64:<b64>`, `file:<path>`, PEM, or a
  literal secret), into `SigningKey` / `VerifyKey` values that know their algorithm. Reading a
  `file:` key is I/O, so the caller injects `read_file`; the core never touches the filesystem.
* Tokens are built and checked with pyjwt's JWS layer (`PyJWS`), not its JWT layer: the JWT layer
  checks `exp`, `nbf` and `iat` against the real clock, and the core has no clock. The claims are
  encoded and checked here, against the `now` the caller passes in. Note that this `now` is
  wall-clock epoch seconds (JWT `exp` is an epoch date), unlike the monotonic `now` of sessions.
* Exactly one algorithm is accepted per key, the one its type implies; `none` is not registered
  at all, so an HS256 token can never be checked against an RSA or EC public key used as a
  secret (the classic algorithm-confusion attack).
* pyjwt warns (`InsecureKeyLengthWarning`) on every use of an HMAC secret shorter than 32 bytes,
  such as Pushpin's shipped default `changeme`. The core must not emit a warning per request, so
  the check runs once, when the key is parsed, and its text is kept in `SigningKey.advice` /
  `VerifyKey.advice` for the adapter to log once.

Error contract: bad key specs are configuration errors (`LocalProtocolError`); a token that does
not validate raises `SigError` with `reason` one of `missing`, `malformed`, `bad-signature`,
`expired`, `no-exp` or `wrong-issuer` (and `is_valid_sig` turns those into `False`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import load_pem_x509_certificate
from jwt import PyJWS
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidSignatureError, PyJWTError

from ._errors import LocalProtocolError, SigError

__all__ = [
    "DEFAULT_SIG_TTL",
    "FASTLY_FANOUT_JWK",
    "MAX_SIG_TOKEN_SIZE",
    "SigAlgorithm",
    "SigningKey",
    "VerifyKey",
    "is_valid_sig",
    "mint_sig",
    "parse_key_spec",
    "parse_verify_key",
    "validate_sig",
]

SigAlgorithm: TypeAlias = Literal["HS256", "ES256", "RS256"]

# Pushpin signs with exp = now + 3600: an hour is what origins have always been handed.
DEFAULT_SIG_TTL = 3600

# A Grip-Sig arrives in a request header, and Pushpin's whole client header buffer is 8192 bytes,
# so nothing longer could reach it; refusing early bounds the work done on hostile tokens.
MAX_SIG_TOKEN_SIZE = 8192

# Fastly Fanout's public key for its ES256 Grip-Sig (published in js-grip as
# PUBLIC_KEY_FASTLY_FANOUT_JWK); pair it with iss "fastly:<service-id>".
FASTLY_FANOUT_JWK: Mapping[str, str] = {
    "kty": "EC",
    "crv": "P-256",
    "x": "CKo5A1ebyFcnmVV8SE5On-8G81JyBjSvcrx4VLetWCg",
    "y": "7gwJqaU6N8TP88--twjkwoB36f-pT3QsmI46nPhjO7M",
}

_SecretOrPrivate: TypeAlias = bytes | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_SecretOrPublic: TypeAlias = bytes | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_Loaded: TypeAlias = (
    ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPrivateKey | rsa.RSAPublicKey
)

_PEM_BEGIN = b"-----BEGIN"
# RFC 7518 section 3.2: an HS256 key should be at least as long as the hash output.
_MIN_HMAC_SECRET = 32
# Below this, RSA keys are considered breakable (NIST SP 800-131A).
_MIN_RSA_BITS = 2048
_JWK_STRING_MEMBERS = ("kty", "crv", "alg", "use", "x", "y", "d", "n", "e", "k")


class _HS256(HMACAlgorithm):
    """HS256 over a secret already validated when its key value was built.

    pyjwt re-inspects an HMAC secret on every call (is it PEM? DER? a JWK?) and warns about its
    length; both were done once, by `_check_secret`.
    """

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def prepare_key(self, key: str | bytes) -> bytes:
        assert isinstance(key, bytes)
        return key

    def check_key_length(self, key: bytes) -> str | None:
        return None


class _RS256(RSAAlgorithm):
    """RS256 whose key-size advice is given once, at parse time, not per token."""

    def __init__(self) -> None:
        super().__init__(RSAAlgorithm.SHA256)

    def check_key_length(self, key: Any) -> str | None:
        return None


def _make_jws() -> PyJWS:
    # An empty allow-list drops every default algorithm, `none` included; only these three exist.
    jws = PyJWS(algorithms=[])
    jws.register_algorithm("HS256", _HS256())
    jws.register_algorithm("ES256", ECAlgorithm(ECAlgorithm.SHA256, ec.SECP256R1))
    jws.register_algorithm("RS256", _RS256())
    return jws


_JWS = _make_jws()


def _public_der(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_secret(secret: bytes) -> str | None:
    """Validate an HS256 secret the way pyjwt would; return advice text if it is short."""
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except PyJWTError as exc:
        raise LocalProtocolError(f"unusable HS256 secret: {exc}") from None
    if len(secret) < _MIN_HMAC_SECRET:
        return (
            f"the HS256 secret is {len(secret)} bytes; at least {_MIN_HMAC_SECRET} are "
            "recommended (RFC 7518 section 3.2)"
        )
    return None


def _check_asymmetric(
    alg: SigAlgorithm, key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
) -> str | None:
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise LocalProtocolError("an ES256 key must be an EC key")
        if not isinstance(key.curve, ec.SECP256R1):
            raise LocalProtocolError(f"an ES256 key must be on curve P-256, not {key.curve.name}")
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        raise LocalProtocolError(f"an {alg} key must be an RSA key")
    if key.key_size < _MIN_RSA_BITS:
        return f"the RSA key has {key.key_size} bits; at least {_MIN_RSA_BITS} are recommended"
    return None


def _check_alg(alg: object) -> None:
    if alg not in ("HS256", "ES256", "RS256"):
        raise LocalProtocolError(f"unsupported Grip-Sig algorithm {alg!r}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key Grip-Sig tokens are signed with, and the algorithm its type implies.

    `key` is the secret (`bytes`, HS256), an EC P-256 private key (ES256) or an RSA private key
    (RS256). `advice` is a note for the operator when the key is weak (short secret, small RSA
    key); the key still works, as in Pushpin. Keys compare equal when their algorithm and secret
    (or public half) are equal; the secret never shows in `repr`.
    Raises `LocalProtocolError` when the key does not fit the algorithm.
    """

    alg: SigAlgorithm
    key: _SecretOrPrivate = field(repr=False, compare=False)
    advice: str | None = field(init=False, compare=False)
    _material: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_alg(self.alg)
        if self.alg == "HS256":
            if not isinstance(self.key, bytes):
                raise LocalProtocolError("an HS256 key must be a bytes secret")
            advice, material = _check_secret(self.key), self.key
        else:
            if not isinstance(self.key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                raise LocalProtocolError(f"an {self.alg} signing key must be a private key")
            public = self.key.public_key()
            advice, material = _check_asymmetric(self.alg, public), _public_der(public)
        object.__setattr__(self, "advice", advice)
        object.__setattr__(self, "_material", material)

    @property
    def verify_key(self) -> VerifyKey:
        """The key that validates what this key signs (the same secret, or the public half)."""
        if isinstance(self.key, bytes):
            return VerifyKey(self.alg, self.key)
        return VerifyKey(self.alg, self.key.public_key())


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A key Grip-Sig tokens are validated with: a secret (HS256) or a public key (ES256/RS256).

    Built by `parse_verify_key` or `SigningKey.verify_key`. Raises `LocalProtocolError` when the
    key does not fit the algorithm.
    """

    alg: SigAlgorithm
    key: _SecretOrPublic = field(repr=False, compare=False)
    advice: str | None = field(init=False, compare=False)
    _material: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_alg(self.alg)
        if self.alg == "HS256":
            if not isinstance(self.key, bytes):
                raise LocalProtocolError("an HS256 key must be a bytes secret")
            advice, material = _check_secret(self.key), self.key
        else:
            if not isinstance(self.key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise LocalProtocolError(f"an {self.alg} verify key must be a public key")
            advice, material = _check_asymmetric(self.alg, self.key), _public_der(self.key)
        object.__setattr__(self, "advice", advice)
        object.__setattr__(self, "_material", material)


# --- key specs ---------------------------------------------------------------------------------


def _decode_base64(text: str) -> bytes:
    try:
        secret = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise LocalProtocolError("key spec 'base64:' is not valid base64") from None
    if not secret:
        raise LocalProtocolError("key spec 'base64:' holds an empty secret")
    return secret


def _decode_hex(data: bytes, path: str) -> bytes:
    try:
        secret = bytes.fromhex(data.strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise LocalProtocolError(
            f"key file {path!r} is neither PEM nor a hex-encoded secret"
        ) from None
    if not secret:
        raise LocalProtocolError(f"key file {path!r} is empty")
    return secret


def _read_key_file(path: str, read_file: Callable[[str], bytes] | None) -> bytes:
    if read_file is None:
        raise LocalProtocolError(
            f"key spec 'file:{path}' needs a read_file function (the core does no I/O)"
        )
    if not path:
        raise LocalProtocolError("key spec 'file:' names no file")
    try:
        data = read_file(path)
    except OSError as exc:
        raise LocalProtocolError(f"cannot read key file {path!r}: {exc}") from None
    if not isinstance(data, bytes):
        raise LocalProtocolError(f"read_file returned {type(data).__name__}, not bytes")
    return data


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("key spec is not encodable as UTF-8") from None


def _load_pem_private(pem: bytes) -> SigningKey:
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise LocalProtocolError("PEM private key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        if _load_pem_public(pem) is not None:
            raise LocalProtocolError(
                "PEM holds a public key; signing needs the private key"
            ) from None
        raise LocalProtocolError("PEM data is not a readable private key") from None
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return SigningKey("ES256", private)
    if isinstance(private, rsa.RSAPrivateKey):
        return SigningKey("RS256", private)
    raise LocalProtocolError(
        f"unsupported private key type {type(private).__name__} (need EC P-256 or RSA)"
    )


def _load_pem_public(pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None:
    """A public key from a PUBLIC KEY or CERTIFICATE PEM; None if it is neither."""
    try:
        public = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        try:
            public = load_pem_x509_certificate(pem).public_key()
        except (ValueError, UnsupportedAlgorithm):
            return None
    if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return public
    raise LocalProtocolError(
        f"unsupported public key type {type(public).__name__} (need EC P-256 or RSA)"
    )


def _verify_key_from_pem(pem: bytes) -> VerifyKey:
    public = _load_pem_public(pem)
    if public is None:
        return _load_pem_private(pem).verify_key
    return VerifyKey("ES256" if isinstance(public, ec.EllipticCurvePublicKey) else "RS256", public)


def _verify_key_from_jwk(jwk: Mapping[str, Any]) -> VerifyKey:
    obj = dict(jwk)
    for name in _JWK_STRING_MEMBERS:
        if name in obj and not isinstance(obj[name], str):
            raise LocalProtocolError(f"JWK member {name!r} must be a string")
    kty = obj.get("kty")
    try:
        if kty == "oct":
            return _check_jwk_alg(obj, VerifyKey("HS256", HMACAlgorithm.from_jwk(obj)))
        if kty == "EC":
            if obj.get("crv") != "P-256":
                raise LocalProtocolError(f"EC JWK must be on curve P-256, not {obj.get('crv')!r}")
            loaded: _Loaded = ECAlgorithm.from_jwk(obj)
            alg: SigAlgorithm = "ES256"
        elif kty == "RSA":
            loaded = RSAAlgorithm.from_jwk(obj)
            alg = "RS256"
        else:
            raise LocalProtocolError(f"unsupported JWK kty {kty!r} (need EC, RSA or oct)")
    except (PyJWTError, ValueError, KeyError) as exc:  # pyjwt raises KeyError for a missing "k"
        raise LocalProtocolError(f"invalid JWK: {exc}") from None
    if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        loaded = loaded.public_key()
    return _check_jwk_alg(obj, VerifyKey(alg, loaded))


def _check_jwk_alg(obj: Mapping[str, Any], key: VerifyKey) -> VerifyKey:
    if obj.get("alg", key.alg) != key.alg:
        raise LocalProtocolError(f"JWK alg {obj['alg']!r} does not fit its key ({key.alg})")
    if obj.get("use", "sig") != "sig":
        raise LocalProtocolError(f"JWK use {obj['use']!r} is not 'sig'")
    return key


def _jwk_from_json(data: bytes | str) -> VerifyKey:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise LocalProtocolError("JWK is not valid JSON") from None
    # Only text that starts with "{" comes here, so it parsed as an object.
    assert isinstance(obj, dict)
    return _verify_key_from_jwk(obj)


def parse_key_spec(
    spec: str, *, read_file: Callable[[str], bytes] | None = None
) -> SigningKey | None:
    """Parse a Pushpin key spec (`sig_key`, a route's `sig_key=`) into a signing key.

    * `""` -> `None`: no signing.
    * `base64:<b64>` -> a binary HS256 secret.
    * `file:<path>` -> `read_file(path)`; PEM if it starts with `-----BEGIN`, else a hex-encoded
      HS256 secret (surrounding whitespace ignored). The caller resolves relative paths.
    * a string starting with `-----BEGIN` -> a PEM private key (EC P-256 -> ES256, RSA -> RS256).
    * anything else -> the literal UTF-8 secret (HS256).

    Raises `LocalProtocolError` for a spec that cannot give a key (bad base64 or hex, unreadable
    file, missing `read_file`, encrypted or public-only PEM, unsupported key type or curve).
    """
    if not isinstance(spec, str):
        raise LocalProtocolError(f"key spec must be a str, not {type(spec).__name__}")
    if not spec:
        return None
    if spec.startswith("base64:"):
        return SigningKey("HS256", _decode_base64(spec[7:]))
    if spec.startswith("file:"):
        path = spec[5:]
        data = _read_key_file(path, read_file)
        if data.lstrip().startswith(_PEM_BEGIN):
            return _load_pem_private(data)
        return SigningKey("HS256", _decode_hex(data, path))
    if spec.lstrip().startswith("-----BEGIN"):
        return _load_pem_private(_utf8(spec))
    return SigningKey("HS256", _utf8(spec))


def parse_verify_key(
    spec: str | Mapping[str, Any], *, read_file: Callable[[str], bytes] | None = None
) -> VerifyKey | None:
    """Parse a key to validate Grip-Sig tokens with (`upstream_key`, an origin's verify key).

    Accepts every form `parse_key_spec` does (a private key gives its public half), and also a
    public key or certificate PEM, and a JWK: a mapping, or a string (or `file:` contents)
    starting with `{`. JWK `kty` may be `EC` (P-256, ES256; Fastly Fanout publishes its key so,
    see `FASTLY_FANOUT_JWK`), `RSA` (RS256) or `oct` (HS256). `""` gives `None`.
    Raises `LocalProtocolError` for a spec that cannot give a key.
    """
    if isinstance(spec, Mapping):
        return _verify_key_from_jwk(spec)
    if not isinstance(spec, str):
        raise LocalProtocolError(f"key spec must be a str or a JWK, not {type(spec).__name__}")
    if spec.startswith("file:"):
        path = spec[5:]
        data = _read_key_file(path, read_file)
        stripped = data.lstrip()
        if stripped.startswith(_PEM_BEGIN):
            return _verify_key_from_pem(data)
        if stripped.startswith(b"{"):
            return _jwk_from_json(data)
        return VerifyKey("HS256", _decode_hex(data, path))
    stripped_spec = spec.lstrip()
    if stripped_spec.startswith("-----BEGIN"):
        return _verify_key_from_pem(_utf8(spec))
    if stripped_spec.startswith("{"):
        return _jwk_from_json(spec)
    signing = parse_key_spec(spec)
    return None if signing is None else signing.verify_key


# --- tokens ------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    """A JSON/Python number that is not a bool and not NaN or infinite (ints may be huge)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(name: str, value: object) -> float:
    if not isinstance(value, int | float) or not _is_number(value):
        raise LocalProtocolError(f"{name} must be a finite number, not {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise LocalProtocolError(f"{name} is out of range: {value!r}") from None


def mint_sig(key: SigningKey, iss: str, now: float, *, ttl: int = DEFAULT_SIG_TTL) -> str:
    """Sign a Grip-Sig token: claims exactly `{"exp": int(now) + ttl, "iss": iss}`.

    `now` is wall-clock epoch seconds, passed in by the caller (the core never reads the clock).
    Pushpin mints a fresh token for every request; so may the caller (HS256 costs microseconds,
    RS256 about a millisecond). Raises `LocalProtocolError` for a non-key, a non-string `iss`,
    a non-finite `now` or a `ttl` that is not a positive int.
    """
    if not isinstance(key, SigningKey):
        raise LocalProtocolError(f"mint_sig needs a SigningKey, not {type(key).__name__}")
    if not isinstance(iss, str):
        raise LocalProtocolError(f"iss must be a str, not {type(iss).__name__}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise LocalProtocolError(f"ttl must be a positive int, not {ttl!r}")
    exp = int(_check_number("now", now)) + ttl
    payload = json.dumps({"exp": exp, "iss": iss}, separators=(",", ":"), sort_keys=True)
    return _JWS.encode(payload.encode("utf-8"), key.key, algorithm=key.alg)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _token_text(token: str | bytes | None) -> str:
    if token is None:
        raise SigError("no Grip-Sig token", reason="missing")
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise SigError("Grip-Sig is not ASCII", reason="malformed") from None
    elif not isinstance(token, str):
        raise LocalProtocolError(f"token must be str, bytes or None, not {type(token).__name__}")
    token = token.strip()
    if not token:
        raise SigError("empty Grip-Sig token", reason="missing")
    if len(token) > MAX_SIG_TOKEN_SIZE:
        raise SigError(
            f"Grip-Sig is {len(token)} bytes, over the {MAX_SIG_TOKEN_SIZE}-byte limit",
            reason="malformed",
        )
    return token


def _verified_payload(token: str, key: VerifyKey) -> bytes:
    try:
        header = _JWS.get_unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise SigError("Grip-Sig header has no alg", reason="malformed")
        if alg != key.alg:
            raise SigError(
                f"Grip-Sig is signed with {alg!r} but the key is {key.alg}", reason="bad-signature"
            )
        decoded = _JWS.decode_complete(token, key.key, algorithms=[key.alg])
    except InvalidSignatureError:
        raise SigError(
            "Grip-Sig signature does not verify with the key", reason="bad-signature"
        ) from None
    except (PyJWTError, ValueError) as exc:
        raise SigError(f"Grip-Sig is not a valid JWT: {exc}", reason="malformed") from None
    payload: bytes = decoded["payload"]
    return payload


def validate_sig(
    token: str | bytes | None,
    key: VerifyKey | SigningKey,
    *,
    now: float,
    iss: str | None = None,
    leeway: float = 0,
) -> dict[str, Any]:
    """Validate a Grip-Sig token and return its claims.

    The token must be a JWT signed with `key`'s algorithm (only that one), its payload a JSON
    object with a numeric `exp` such that `now < exp + leeway` (`now` in epoch seconds: Pushpin
    treats a token as expired from the second `exp` itself), and, when `iss` is given, an equal
    `iss` claim. `exp` is required: GRIP tells receivers to check it, and Pushpin refuses a
    token without one.

    Raises `SigError` whose `reason` is `missing` (None or empty), `malformed` (not a JWT,
    oversized, payload not a JSON object, `exp` not a number), `bad-signature` (another key,
    another algorithm, `none`, tampered), `no-exp`, `expired` or `wrong-issuer`.
    Raises `LocalProtocolError` when the arguments themselves are wrong.
    """
    text = _token_text(token)
    if isinstance(key, SigningKey):
        key = key.verify_key
    elif not isinstance(key, VerifyKey):
        raise LocalProtocolError(f"validate_sig needs a VerifyKey, not {type(key).__name__}")
    now = _check_number("now", now)
    if _check_number("leeway", leeway) < 0:
        raise LocalProtocolError("leeway must not be negative")
    if iss is not None and not isinstance(iss, str):
        raise LocalProtocolError(f"iss must be a str or None, not {type(iss).__name__}")

    payload = _verified_payload(text, key)
    try:
        claims = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise SigError("Grip-Sig payload is not JSON", reason="malformed") from None
    if not isinstance(claims, dict):
        raise SigError("Grip-Sig payload is not a JSON object", reason="malformed")

    exp = claims.get("exp")
    if exp is None:
        raise SigError("Grip-Sig has no exp claim", reason="no-exp")
    if not _is_number(exp):
        raise SigError(f"Grip-Sig exp claim is not a number: {exp!r}", reason="malformed")
    if now - leeway >= exp:
        raise SigError(f"Grip-Sig expired at {exp} (now {int(now)})", reason="expired")
    if iss is not None and claims.get("iss") != iss:
        raise SigError(
            f"Grip-Sig issuer is {claims.get('iss')!r}, expected {iss!r}", reason="wrong-issuer"
        )
    return claims


def is_valid_sig(
    token: str | bytes | None,
    key: VerifyKey | SigningKey,
    *,
    now: float,
    iss: str | None = None,
    leeway: float = 0,
) -> bool:
    """True when `validate_sig` accepts the token; GRIP: "treat invalid as absent".

    Raises only `LocalProtocolError`, for wrong arguments.
    """
    try:
        validate_sig(token, key, now=now, iss=iss, leeway=leeway)
    except SigError:
        return False
    return True
