"""Grip-Sig: key specs, minting, validation, interop with plain pyjwt, and hostile tokens."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from gripcore._errors import LocalProtocolError, ProtocolError, SigError
from gripcore._sig import (
    DEFAULT_SIG_TTL,
    FASTLY_FANOUT_JWK,
    MAX_SIG_TOKEN_SIZE,
    SigningKey,
    VerifyKey,
    is_valid_sig,
    mint_sig,
    parse_key_spec,
    parse_verify_key,
    validate_sig,
)

from .hypothesis_support import examples

NOW = 1_700_000_000.75
LONG_SECRET = b"0123456789abcdef0123456789abcdef"  # 32 bytes: no short-key advice


# --- key material (generated once per module: RSA generation is slowish) -----------------------


def _private_pem(key: Any) -> str:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def _public_pem(key: Any) -> str:
    pem: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """PEM texts by name, so vectors can refer to them as data."""
    return {
        "ec": _private_pem(ec_key),
        "ec_pub": _public_pem(ec_key.public_key()),
        "rsa": _private_pem(rsa_key),
        "rsa_pub": _public_pem(rsa_key.public_key()),
    }


def _reader(files: dict[str, bytes]) -> Callable[[str], bytes]:
    def read_file(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return read_file


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _forge_hs256(header: dict[str, Any], payload: bytes, secret: bytes) -> str:
    """A token signed by hand, so tests control every byte of header and payload."""
    signing_input = _b64url(json.dumps(header).encode()) + b"." + _b64url(payload)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64url(signature)).decode()


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return claims


# --- key specs ---------------------------------------------------------------------------------

# (spec, files, expected secret): every HS256 form of a Pushpin key spec.
SECRET_SPEC_VECTORS: list[tuple[str, dict[str, bytes], bytes]] = [
    ("changeme", {}, b"changeme"),
    ("caf\u00e9", {}, "caf\u00e9".encode()),
    ("base64:" + base64.b64encode(b"\x00\xffbin").decode(), {}, b"\x00\xffbin"),
    ("base64:YWJj", {}, b"abc"),
    ("base64:YWI", {}, b"ab"),  # missing padding tolerated
    ("file:key.hex", {"key.hex": b"  616263\n"}, b"abc"),
    ("file:/abs/key", {"/abs/key": LONG_SECRET.hex().encode()}, LONG_SECRET),
    (" base64:x", {}, b" base64:x"),  # prefixes only count at the start
]

# (spec, files, message fragment): specs that cannot give a signing key.
BAD_SPEC_VECTORS: list[tuple[str, dict[str, bytes], str]] = [
    ("base64:!!!", {}, "not valid base64"),
    ("base64:", {}, "empty secret"),
    ("file:missing", {}, "cannot read key file 'missing'"),
    ("file:", {}, "names no file"),
    ("file:bad.hex", {"bad.hex": b"xyz"}, "neither PEM nor a hex-encoded secret"),
    ("file:utf.hex", {"utf.hex": "\u00e9".encode()}, "neither PEM nor a hex-encoded secret"),
    ("file:empty", {"empty": b"\n"}, "is empty"),
    ("file:junk.pem", {"junk.pem": b"-----BEGIN JUNK-----\n"}, "not a readable private key"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", {}, "not a readable"),
    ('{"kty": "oct", "k": "YWJj"}', {}, "unusable HS256 secret"),
    ("\ud800", {}, "not encodable as UTF-8"),
]


@pytest.mark.parametrize(("spec", "files", "secret"), SECRET_SPEC_VECTORS)
def test_secret_key_specs(spec: str, files: dict[str, bytes], secret: bytes) -> None:
    key = parse_key_spec(spec, read_file=_reader(files))
    assert key == SigningKey("HS256", secret)
    assert key is not None and key.key == secret
    verify = parse_verify_key(spec, read_file=_reader(files))
    assert verify == VerifyKey("HS256", secret)


@pytest.mark.parametrize(("spec", "files", "fragment"), BAD_SPEC_VECTORS)
def test_bad_key_specs(spec: str, files: dict[str, bytes], fragment: str) -> None:
    with pytest.raises(LocalProtocolError, match=None) as info:
        parse_key_spec(spec, read_file=_reader(files))
    assert fragment in str(info.value)


def test_empty_spec_means_no_signing() -> None:
    assert parse_key_spec("") is None
    assert parse_verify_key("") is None


def test_file_spec_needs_a_reader() -> None:
    with pytest.raises(LocalProtocolError, match="needs a read_file function"):
        parse_key_spec("file:/etc/pushpin/key")
    with pytest.raises(LocalProtocolError, match="needs a read_file function"):
        parse_verify_key("file:/etc/pushpin/key")


def test_reader_must_return_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="returned str, not bytes"):
        parse_key_spec("file:k", read_file=lambda path: "abc")  # type: ignore[arg-type,return-value]


def test_spec_must_be_text() -> None:
    with pytest.raises(LocalProtocolError, match="must be a str"):
        parse_key_spec(b"changeme")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="must be a str or a JWK"):
        parse_verify_key(b"changeme")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "alg"), [("ec", "ES256"), ("rsa", "RS256")])
def test_pem_specs_pick_the_algorithm(keys: dict[str, str], name: str, alg: str) -> None:
    pem = keys[name]
    bare = parse_key_spec(pem)
    from_file = parse_key_spec("file:k.pem", read_file=_reader({"k.pem": pem.encode()}))
    assert bare is not None and bare.alg == alg and bare.advice is None
    assert bare == from_file
    assert parse_key_spec("\n" + pem) == bare  # leading whitespace before the PEM is fine
    public = parse_verify_key(keys[name + "_pub"])
    assert public == bare.verify_key
    assert parse_verify_key(pem) == public  # a private key verifies with its public half
    assert parse_verify_key("file:p", read_file=_reader({"p": keys[name + "_pub"].encode()})) == (
        public
    )


def test_public_pem_cannot_sign(keys: dict[str, str]) -> None:
    with pytest.raises(LocalProtocolError, match="public key; signing needs the private key"):
        parse_key_spec(keys["ec_pub"])


def test_encrypted_pem_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(LocalProtocolError, match="encrypted"):
        parse_key_spec(pem)


def test_unsupported_key_types() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(LocalProtocolError, match="unsupported private key type"):
        parse_key_spec(_private_pem(ed))
    with pytest.raises(LocalProtocolError, match="unsupported public key type"):
        parse_verify_key(_public_pem(ed.public_key()))
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(LocalProtocolError, match="curve P-256, not secp384r1"):
        parse_key_spec(_private_pem(p384))
    with pytest.raises(LocalProtocolError, match="curve P-256"):
        parse_verify_key(_public_pem(p384.public_key()))


def test_certificate_pem_verifies(ec_key: ec.EllipticCurvePrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "origin")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(ec_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key = parse_verify_key(pem)
    assert key == VerifyKey("ES256", ec_key.public_key())
    token = mint_sig(SigningKey("ES256", ec_key), "pushpin", NOW)
    assert validate_sig(token, key, now=NOW)["iss"] == "pushpin"


def test_weak_keys_carry_advice_instead_of_warning() -> None:
    short = parse_key_spec("changeme")
    assert short is not None and short.advice is not None and "8 bytes" in short.advice
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_key = parse_key_spec(_private_pem(small))
    assert rsa_key is not None and rsa_key.advice is not None and "1024 bits" in rsa_key.advice
    # Using them emits no InsecureKeyLengthWarning (warnings are errors in this suite).
    for key in (short, rsa_key):
        assert validate_sig(mint_sig(key, "pushpin", NOW), key, now=NOW)["iss"] == "pushpin"


def test_repr_does_not_leak_the_secret() -> None:
    key = SigningKey("HS256", b"top-secret-value")
    assert "top-secret" not in repr(key)
    assert "top-secret" not in repr(key.verify_key)
    assert hash(key) == hash(SigningKey("HS256", b"top-secret-value"))
    assert key != SigningKey("HS256", b"another-secret")


# (alg, key factory name, message fragment): key values that do not fit their algorithm.
BAD_KEY_VALUES: list[tuple[str, str, str]] = [
    ("HS256", "ec", "must be a bytes secret"),
    ("ES256", "secret", "must be a private key"),
    ("ES256", "rsa", "must be an EC key"),
    ("RS256", "ec", "must be an RSA key"),
    ("HS384", "secret", "unsupported Grip-Sig algorithm"),
]


@pytest.mark.parametrize(("alg", "kind", "fragment"), BAD_KEY_VALUES)
def test_key_values_are_validated(
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    alg: str,
    kind: str,
    fragment: str,
) -> None:
    private = {"ec": ec_key, "rsa": rsa_key, "secret": b"secret"}[kind]
    public = {"ec": ec_key.public_key(), "rsa": rsa_key.public_key(), "secret": b"secret"}[kind]
    with pytest.raises(LocalProtocolError, match=fragment):
        SigningKey(alg, private)  # type: ignore[arg-type]
    verify_fragment = fragment.replace("a private key", "a public key")
    with pytest.raises(LocalProtocolError, match=verify_fragment):
        VerifyKey(alg, public)  # type: ignore[arg-type]


def test_verify_key_refuses_a_private_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(LocalProtocolError, match="must be a public key"):
        VerifyKey("ES256", ec_key)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="unusable HS256 secret"):
        VerifyKey("HS256", b"")


# --- JWK ---------------------------------------------------------------------------------------


def test_fastly_fanout_jwk() -> None:
    key = parse_verify_key(FASTLY_FANOUT_JWK)
    assert key is not None and key.alg == "ES256"
    assert parse_verify_key(json.dumps(dict(FASTLY_FANOUT_JWK))) == key
    # A token Fanout did not sign is refused with that key.
    forged = _forge_hs256({"alg": "ES256", "typ": "JWT"}, b'{"exp":1}', b"x")
    with pytest.raises(SigError) as info:
        validate_sig(forged, key, now=0)
    assert info.value.reason == "bad-signature"


def test_jwk_forms_validate_our_tokens(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    cases: list[tuple[SigningKey, dict[str, Any]]] = [
        (SigningKey("ES256", ec_key), ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)),
        (SigningKey("ES256", ec_key), ECAlgorithm.to_jwk(ec_key, as_dict=True)),
        (SigningKey("RS256", rsa_key), RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)),
        (SigningKey("RS256", rsa_key), RSAAlgorithm.to_jwk(rsa_key, as_dict=True)),
        (SigningKey("HS256", LONG_SECRET), HMACAlgorithm.to_jwk(LONG_SECRET, as_dict=True)),
    ]
    for signing, jwk in cases:
        jwk = {**jwk, "alg": signing.alg, "use": "sig"}
        key = parse_verify_key(jwk)
        assert key == signing.verify_key
        files = {"k.json": json.dumps(jwk).encode()}
        assert parse_verify_key("file:k.json", read_file=_reader(files)) == key
        token = mint_sig(signing, "iss", NOW)
        assert validate_sig(token, key, now=NOW) == {"iss": "iss", "exp": int(NOW) + 3600}


# (jwk, message fragment)
BAD_JWK_VECTORS: list[tuple[Any, str]] = [
    ({"kty": "OKP", "crv": "Ed25519", "x": "AA"}, "unsupported JWK kty 'OKP'"),
    ({}, "unsupported JWK kty None"),
    ({**FASTLY_FANOUT_JWK, "crv": "P-384"}, "curve P-256, not 'P-384'"),
    ({**FASTLY_FANOUT_JWK, "alg": "RS256"}, "JWK alg 'RS256' does not fit its key (ES256)"),
    ({**FASTLY_FANOUT_JWK, "use": "enc"}, "JWK use 'enc' is not 'sig'"),
    ({**FASTLY_FANOUT_JWK, "x": 5}, "JWK member 'x' must be a string"),
    ({**FASTLY_FANOUT_JWK, "x": "!!"}, "invalid JWK"),
    ({**FASTLY_FANOUT_JWK, "x": "AAAA"}, "invalid JWK"),
    ({"kty": "RSA", "n": "AQAB"}, "invalid JWK"),
    ({"kty": "oct", "k": ""}, "invalid JWK"),
    ("{", "JWK is not valid JSON"),
    ('{"a": [1, 2]', "JWK is not valid JSON"),
    ("{" * 5000, "JWK is not valid JSON"),
    ('{"kty": "EC"} []', "JWK is not valid JSON"),
]


@pytest.mark.parametrize(("jwk", "fragment"), BAD_JWK_VECTORS)
def test_bad_jwks(jwk: Any, fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_verify_key(jwk)
    assert fragment in str(info.value)


# --- minting -----------------------------------------------------------------------------------


def test_mint_claims_are_exactly_iss_and_exp() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    token = mint_sig(key, "pushpin", NOW)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert _claims(token) == {"iss": "pushpin", "exp": int(NOW) + DEFAULT_SIG_TTL}
    assert mint_sig(key, "pushpin", NOW) == token  # HS256 is deterministic
    assert _claims(mint_sig(key, "x", 10, ttl=5)) == {"iss": "x", "exp": 15}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((b"key", "iss", NOW), "needs a SigningKey"),
        ((None, 5, NOW), "iss must be a str"),
        ((None, "iss", float("nan")), "now must be a finite number"),
        ((None, "iss", True), "now must be a finite number"),
        ((None, "iss", 10**400), "now is out of range"),
    ],
)
def test_mint_argument_errors(args: tuple[Any, Any, Any], fragment: str) -> None:
    key = args[0] if args[0] is not None else SigningKey("HS256", LONG_SECRET)
    with pytest.raises(LocalProtocolError, match=fragment):
        mint_sig(key, args[1], args[2])


@pytest.mark.parametrize("ttl", [0, -1, True, 1.5])
def test_mint_ttl_must_be_positive_int(ttl: Any) -> None:
    with pytest.raises(LocalProtocolError, match="ttl must be a positive int"):
        mint_sig(SigningKey("HS256", LONG_SECRET), "iss", NOW, ttl=ttl)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hs", "ec", "rsa"])
def test_round_trip_and_expiry_boundary(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, kind: str
) -> None:
    key = {
        "hs": SigningKey("HS256", LONG_SECRET),
        "ec": SigningKey("ES256", ec_key),
        "rsa": SigningKey("RS256", rsa_key),
    }[kind]
    token = mint_sig(key, "pushpin", NOW)
    exp = int(NOW) + 3600
    assert jwt.get_unverified_header(token)["alg"] == key.alg
    assert validate_sig(token, key.verify_key, now=exp - 1, iss="pushpin") == {
        "iss": "pushpin",
        "exp": exp,
    }
    assert validate_sig(token.encode(), key, now=exp - 0.001)["exp"] == exp
    for now in (exp, exp + 1):
        with pytest.raises(SigError) as info:
            validate_sig(token, key, now=now)
        assert info.value.reason == "expired" and info.value.error_status_hint == 401
    assert validate_sig(token, key, now=exp + 4, leeway=5)["exp"] == exp
    assert not is_valid_sig(token, key, now=exp + 5, leeway=5)


def _reason(token: Any, key: VerifyKey | SigningKey, **kwargs: Any) -> str:
    with pytest.raises(SigError) as info:
        validate_sig(token, key, **{"now": NOW, **kwargs})
    assert str(info.value)  # every rejection says what was wrong
    return info.value.reason


def test_missing_tokens() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    for token in (None, "", b"", "   "):
        assert _reason(token, key) == "missing"
        assert is_valid_sig(token, key, now=NOW) is False


def test_wrong_key_and_tampering(ec_key: ec.EllipticCurvePrivateKey) -> None:
    key = SigningKey("HS256", LONG_SECRET)
    token = mint_sig(key, "pushpin", NOW)
    assert _reason(token, SigningKey("HS256", LONG_SECRET[::-1])) == "bad-signature"
    header, _payload, signature = token.split(".")
    tampered = _b64url(json.dumps({"iss": "pushpin", "exp": 2**40}).encode()).decode()
    assert _reason(f"{header}.{tampered}.{signature}", key) == "bad-signature"
    other = SigningKey("ES256", ec_key)
    assert _reason(mint_sig(other, "pushpin", NOW), SigningKey("ES256", _new_ec())) == (
        "bad-signature"
    )


def _new_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_alg_none_is_rejected() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    body = _b64url(json.dumps({"iss": "pushpin", "exp": 2**40}).encode()).decode()
    for alg in ("none", "None", "NONE"):
        head = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()).decode()
        assert _reason(f"{head}.{body}.", key) == "bad-signature"


def test_hs256_token_against_public_keys_is_rejected(keys: dict[str, str]) -> None:
    """Algorithm confusion: an HS256 token 'signed' with the public key PEM as the secret."""
    payload = json.dumps({"iss": "pushpin", "exp": 2**40}).encode()
    for name in ("ec_pub", "rsa_pub"):
        public_pem = keys[name].encode()
        forged = _forge_hs256({"alg": "HS256", "typ": "JWT"}, payload, public_pem)
        verify = parse_verify_key(keys[name])
        assert verify is not None
        assert _reason(forged, verify) == "bad-signature"


def test_es256_token_against_a_secret_is_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = mint_sig(SigningKey("ES256", ec_key), "pushpin", NOW)
    assert _reason(token, SigningKey("HS256", LONG_SECRET)) == "bad-signature"


def test_issuer_check() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    token = mint_sig(key, "fastly:svc", NOW)
    assert validate_sig(token, key, now=NOW, iss="fastly:svc")["iss"] == "fastly:svc"
    assert _reason(token, key, iss="fastly:other") == "wrong-issuer"
    no_iss = _forge_hs256({"alg": "HS256"}, b'{"exp": 9999999999}', LONG_SECRET)
    assert validate_sig(no_iss, key, now=NOW) == {"exp": 9999999999}  # iss only checked if asked
    assert _reason(no_iss, key, iss="pushpin") == "wrong-issuer"


# (payload bytes signed with a valid signature, expected reason)
PAYLOAD_VECTORS: list[tuple[bytes, str]] = [
    (b'{"iss": "pushpin"}', "no-exp"),
    (b'{"exp": null}', "no-exp"),
    (b'{"exp": "9999999999"}', "malformed"),
    (b'{"exp": true}', "malformed"),
    (b'{"exp": NaN}', "malformed"),
    (b'{"exp": Infinity}', "malformed"),
    (b'{"exp": 1e999}', "malformed"),
    (b'{"exp": 1' + b"0" * 5000 + b"}", "malformed"),  # too many digits for int()
    (b"[1, 2]", "malformed"),
    (b'"text"', "malformed"),
    (b"not json", "malformed"),
    (b"\xff\xfe\x00", "malformed"),
    (b"[" * 3000 + b"]" * 3000, "malformed"),
    (b'{"exp": 1}', "expired"),
    (b'{"exp": 0}', "expired"),
    (b'{"exp": -5}', "expired"),
]


@pytest.mark.parametrize(("payload", "reason"), PAYLOAD_VECTORS)
def test_payload_vectors(payload: bytes, reason: str) -> None:
    token = _forge_hs256({"alg": "HS256", "typ": "JWT"}, payload, LONG_SECRET)
    assert _reason(token, SigningKey("HS256", LONG_SECRET)) == reason


def test_accepted_payload_shapes() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    for payload, exp in [(b'{"exp": 1e10}', 1e10), (b'{"exp": 1' + b"0" * 400 + b"}", 10**400)]:
        token = _forge_hs256({"alg": "HS256"}, payload, LONG_SECRET)
        assert validate_sig(token, key, now=NOW)["exp"] == exp


# (token, reason): tokens that are not JWTs at all.
MALFORMED_TOKENS: list[tuple[str | bytes, str]] = [
    ("abc", "malformed"),
    ("a.b", "malformed"),
    ("a.b.c", "malformed"),
    ("!!!.!!!.!!!", "malformed"),
    (b"\xff.\xff.\xff", "malformed"),
    ("\u00e9.x.y", "malformed"),
    (_b64url(b"[1]").decode() + ".e30.", "malformed"),
    (_b64url(b'{"typ":"JWT"}').decode() + ".e30.", "malformed"),
    (_b64url(b'{"alg":5}').decode() + ".e30.", "malformed"),
    (_b64url(b'{"alg":"HS256","crit":["zip"]}').decode() + ".e30.c2ln", "malformed"),
    (_b64url(b'{"alg":"HS256","kid":5}').decode() + ".e30.c2ln", "malformed"),
    ("a" * (MAX_SIG_TOKEN_SIZE + 1), "malformed"),
]


@pytest.mark.parametrize(("token", "reason"), MALFORMED_TOKENS)
def test_malformed_tokens(token: str | bytes, reason: str) -> None:
    assert _reason(token, SigningKey("HS256", LONG_SECRET)) == reason


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"token": 5}, "token must be str, bytes or None"),
        ({"key": b"secret"}, "needs a VerifyKey"),
        ({"now": float("inf")}, "now must be a finite number"),
        ({"leeway": -1}, "leeway must not be negative"),
        ({"iss": b"pushpin"}, "iss must be a str or None"),
    ],
)
def test_validate_argument_errors(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {
        "token": mint_sig(SigningKey("HS256", LONG_SECRET), "i", NOW),
        "key": SigningKey("HS256", LONG_SECRET),
        "now": NOW,
        **kwargs,
    }
    token, key = args.pop("token"), args.pop("key")
    with pytest.raises(LocalProtocolError, match=fragment):
        validate_sig(token, key, **args)
    with pytest.raises(LocalProtocolError, match=fragment):
        is_valid_sig(token, key, **args)


# --- interop with plain pyjwt ------------------------------------------------------------------


def test_plain_pyjwt_tokens_validate(ec_key: ec.EllipticCurvePrivateKey) -> None:
    claims = {"iss": "pushpin", "exp": int(NOW) + 60}
    hs = jwt.encode(claims, LONG_SECRET, algorithm="HS256")
    assert validate_sig(hs, SigningKey("HS256", LONG_SECRET), now=NOW, iss="pushpin") == claims
    es = jwt.encode(claims, ec_key, algorithm="ES256")
    assert validate_sig(es, VerifyKey("ES256", ec_key.public_key()), now=NOW) == claims


def test_our_tokens_decode_with_plain_pyjwt(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    cases: list[tuple[SigningKey, Any]] = [
        (SigningKey("HS256", LONG_SECRET), LONG_SECRET),
        (SigningKey("ES256", ec_key), ec_key.public_key()),
        (SigningKey("RS256", rsa_key), rsa_key.public_key()),
    ]
    for key, public in cases:
        token = mint_sig(key, "pushpin", NOW)
        decoded = jwt.decode(token, public, algorithms=[key.alg], options={"verify_exp": False})
        assert decoded == {"iss": "pushpin", "exp": int(NOW) + 3600}


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=examples(60))
@given(
    iss=st.text(max_size=40),
    now=st.one_of(
        st.integers(0, 2**40),
        st.floats(0, 2**40, allow_nan=False, allow_infinity=False),
    ),
    ttl=st.integers(1, 10**7),
)
def test_mint_validate_round_trip(iss: str, now: float, ttl: int) -> None:
    key = SigningKey("HS256", LONG_SECRET)
    token = mint_sig(key, iss, now, ttl=ttl)
    assert validate_sig(token, key, now=now, iss=iss) == {"iss": iss, "exp": int(now) + ttl}
    assert is_valid_sig(token, key, now=now)
    assert not is_valid_sig(token, key, now=int(now) + ttl)


@settings(max_examples=examples(200))
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_tokens_raise_only_sig_errors(token: str | bytes) -> None:
    try:
        claims = validate_sig(token, SigningKey("HS256", LONG_SECRET), now=NOW)
    except SigError as exc:
        assert exc.reason in {"missing", "malformed", "bad-signature"}
    else:  # pragma: no cover - would need a forged HMAC
        pytest.fail(f"garbage validated: {claims}")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=examples(60))
@given(
    header=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["HS256", "none", "ES256", 1])},
            optional={
                "kid": _json,
                "crit": _json,
                "b64": _json,
                "typ": _json,
            },
        ),
    ),
    payload=_json,
    signature=st.binary(max_size=40),
    sign=st.booleans(),
)
def test_structured_garbage_raises_only_sig_errors(
    header: Any, payload: Any, signature: bytes, sign: bool
) -> None:
    head = _b64url(json.dumps(header).encode())
    body = _b64url(json.dumps(payload).encode())
    if sign:
        signature = hmac.new(LONG_SECRET, head + b"." + body, hashlib.sha256).digest()
    token = head + b"." + body + b"." + _b64url(signature)
    try:
        claims = validate_sig(token, SigningKey("HS256", LONG_SECRET), now=NOW)
    except SigError as exc:
        assert exc.reason in {"malformed", "bad-signature", "no-exp", "expired"}
    else:
        assert sign and isinstance(claims, dict) and claims["exp"] > NOW


@settings(max_examples=examples(150))
@given(st.text(max_size=200))
def test_arbitrary_specs_raise_only_protocol_errors(spec: str) -> None:
    for text in (spec, "-----BEGIN " + spec, "base64:" + spec, "{" + spec):
        for parse in (parse_key_spec, parse_verify_key):
            try:
                key = parse(text)
            except ProtocolError as exc:
                assert isinstance(exc, LocalProtocolError) and str(exc)
            else:
                assert key is None or key.alg in {"HS256", "ES256", "RS256"}


@settings(max_examples=examples(80))
@given(
    st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "y", "d", "n", "e", "k", "alg", "use"]),
        st.one_of(
            st.sampled_from(["EC", "RSA", "oct", "P-256", "AQAB", "ES256", "sig", ""]),
            st.text(alphabet="ABCDEFabcdef-_0123456789", max_size=60),
            st.integers(),
            st.none(),
        ),
    )
)
def test_arbitrary_jwks_raise_only_protocol_errors(jwk: dict[str, Any]) -> None:
    try:
        key = parse_verify_key(jwk)
    except ProtocolError as exc:
        assert isinstance(exc, LocalProtocolError)
    else:
        assert isinstance(key, VerifyKey)


def test_large_inputs_stay_bounded() -> None:
    key = SigningKey("HS256", LONG_SECRET)
    huge = "a." * 500_000
    assert _reason(huge, key) == "malformed"  # refused by size before any decoding
    big_secret = parse_key_spec("s" * 1_000_000)
    assert big_secret is not None
    token = mint_sig(big_secret, "pushpin", NOW)
    assert validate_sig(token, big_secret, now=NOW)["iss"] == "pushpin"


def test_oct_jwk_without_k_is_a_local_error() -> None:
    """Found by hypothesis: pyjwt raised KeyError for {"kty": "oct"}."""
    from gripcore import LocalProtocolError, parse_verify_key

    with pytest.raises(LocalProtocolError, match="invalid JWK"):
        parse_verify_key({"kty": "oct"})
