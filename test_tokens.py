"""Hostile tokens: each is refused with a JSON 401, none answers 500.

Every token here goes through the Flask test client to a route that needs
one, so the whole path is exercised: header parsing, decoding, claims,
the error handler and the log line.
"""

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid

import pytest

import auth as auth_module
import orders
from conftest import OTHER_SECRET
from conftest import TEST_SECRET
from conftest import make_claims
from conftest import sign

ORDERS_URL = "/api/v1/orders"
INVALID_TOKEN = {"success": False, "messages": ["INVALID_TOKEN"]}
USER = "0b6f2d4e-8a1c-4e3f-9d5b-7c2a1e0f3b4d"


def b64url(data):
    if not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header, claims, secret=None, digest=hashlib.sha512):
    """A compact JWT built by hand, HMAC-signed with `secret` or unsigned."""
    signing_input = b64url(header) + "." + b64url(claims)
    signature = ""
    if secret is not None:
        mac = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
        signature = b64url(mac)
    return signing_input + "." + signature


def bearer(token):
    return {"Authorization": "Bearer " + token}


def assert_refused(response, token_sent=True):
    assert response.status_code == 401
    assert response.get_json() == INVALID_TOKEN
    assert response.mimetype == "application/json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is token_sent


def valid_claims(**overrides):
    return make_claims(USER, **overrides)


def now():
    return int(time.time())


@pytest.fixture
def make_app(empty_database):
    """`make_app(**environment)` -> an app configured like a deployment."""
    made = []

    def make(**environ):
        settings = {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": empty_database}
        settings.update(environ)
        application = orders.create_app(settings)
        made.append(application)
        return application.test_client()

    yield make
    for application in made:
        application.extensions["orders_db"].close()


def test_valid_token_is_accepted(client):
    response = client.get(ORDERS_URL, headers=bearer(sign(valid_claims())))

    assert response.status_code == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "nonE"])
def test_alg_none_is_401_in_any_spelling(client, alg):
    unsigned = forge({"alg": alg, "typ": "JWT"}, valid_claims())
    signed = forge({"alg": alg, "typ": "JWT"}, valid_claims(), TEST_SECRET)

    for token in (unsigned, signed):
        assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


@pytest.mark.parametrize(
    "alg, digest",
    [
        ("HS256", hashlib.sha256),
        ("HS384", hashlib.sha384),
        ("RS256", hashlib.sha256),
        ("ES256", hashlib.sha256),
        ("PS512", hashlib.sha512),
        ("EdDSA", hashlib.sha512),
    ],
)
def test_algorithm_outside_allowed_list_is_401(client, alg, digest):
    # Signed with our secret as HMAC key: the classic confusion attack.
    token = forge({"alg": alg, "typ": "JWT"}, valid_claims(), TEST_SECRET, digest)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_hs256_with_our_secret_is_401_when_only_hs512_allowed(client):
    token = sign(valid_claims(), algorithm="HS256")

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_hs256_is_accepted_once_configured(make_app):
    client = make_app(JWT_ALGORITHMS="HS512,HS256")

    token = sign(valid_claims(), algorithm="HS256")

    response = client.get(ORDERS_URL, headers=bearer(token))

    assert response.status_code == 200


@pytest.mark.parametrize(
    "name, value",
    [
        ("JWT_ALGORITHMS", "RS256"),
        ("JWT_ALGORITHMS", "none"),
        ("JWT_ALGORITHMS", "HS512,ES256"),
        ("JWT_ALGORITHMS", ","),
        ("JWT_LEEWAY_S", "61"),
        ("JWT_LEEWAY_S", "-1"),
        ("JWT_LEEWAY_S", "5s"),
        ("JWT_LEEWAY_S", "1e1"),
        ("JWT_LEEWAY_S", "3600"),
    ],
)
def test_token_setting_out_of_bounds_refuses_to_start(empty_database, name, value):
    settings = {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": empty_database, name: value}

    with pytest.raises(orders.ConfigError, match=name):
        orders.create_app(settings)


def test_other_secret_is_401(client):
    token = sign(valid_claims(), secret=OTHER_SECRET)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_tampered_payload_is_401(client):
    header, _, signature = sign(valid_claims()).split(".")
    other_user = b64url(make_claims(str(uuid.uuid4())))

    token = f"{header}.{other_user}.{signature}"

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_tampered_header_is_401(client):
    _, payload, signature = sign(valid_claims()).split(".")
    header = b64url({"alg": "HS512", "typ": "JWT", "kid": "other"})

    token = f"{header}.{payload}.{signature}"

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_tampered_signature_is_401(client):
    token = sign(valid_claims())
    flipped = "A" if token[-2] != "A" else "B"

    tampered = token[:-2] + flipped + token[-1]

    assert_refused(client.get(ORDERS_URL, headers=bearer(tampered)))


CLAIM_FAULTS = {
    "expired": {"exp": now() - 3600},
    "expired-just-past-leeway": {"exp": now() - 60},
    "nbf-in-future": {"nbf": now() + 3600},
    "no-exp": {"exp": None},
    "exp-not-a-number": {"exp": "tomorrow"},
    "exp-negative": {"exp": -1},
    "exp-digit-string": {"exp": "9999999999"},
    "nbf-digit-string": {"nbf": "1"},
    "iat-digit-string": {"iat": "1"},
    "exp-boolean": {"exp": True},
    "iat-not-a-number": {"iat": "now"},
    "wrong-aud": {"aud": "another-shop"},
    "missing-aud": {"aud": None},
    "aud-list-without-ours": {"aud": ["another-shop", "shop-example-x"]},
    "aud-empty-list": {"aud": []},
    "aud-not-string": {"aud": 7},
    "aud-fragment": {"aud": "shop"},
    "wrong-iss": {"iss": "evil_users"},
    "iss-fragment-users": {"iss": "users"},
    "iss-fragment-docs": {"iss": "docs"},
    "iss-superstring": {"iss": "docs_users.evil"},
    "iss-list": {"iss": ["docs_users"]},
    "missing-iss": {"iss": None},
    "missing-sub": {"sub": None},
    "sub-number": {"sub": 12345},
    "sub-list": {"sub": [f"UUID:{USER}"]},
    "sub-bare-uuid": {"sub": USER},
    "sub-other-prefix": {"sub": f"USER:{USER}"},
    "sub-lower-prefix": {"sub": f"uuid:{USER}"},
    "sub-not-uuid": {"sub": "UUID:alice"},
    "sub-uuid-trailing-newline": {"sub": f"UUID:{USER}\n"},
    "sub-uuid-with-braces": {"sub": "UUID:{" + USER + "}"},
    "sub-uuid-hex-only": {"sub": "UUID:" + USER.replace("-", "")},
    "typ-refresh": {"typ": "refresh"},
    "typ-missing": {"typ": None},
    "typ-upper-case": {"typ": "ACCESS"},
}


@pytest.mark.parametrize("overrides", CLAIM_FAULTS.values(), ids=CLAIM_FAULTS.keys())
def test_token_with_bad_claims_is_401(client, sql, overrides):
    header = {"alg": "HS512", "typ": "JWT"}
    token = forge(header, valid_claims(**overrides), TEST_SECRET)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))
    response = client.post(
        ORDERS_URL,
        json={"products": [{"uuid": USER, "quantity": 1}]},
        headers=bearer(token),
    )
    assert_refused(response)
    assert sql("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"NaN", b"Infinity"])
def test_exp_beyond_float_range_is_401(client, number):
    claims = json.dumps(valid_claims(exp=12345)).encode().replace(b"12345", number)

    token = forge({"alg": "HS512", "typ": "JWT"}, claims, TEST_SECRET)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_aud_list_with_ours_is_accepted(client):
    token = sign(valid_claims(aud=["another-shop", "shop-example"]))

    response = client.get(ORDERS_URL, headers=bearer(token))

    assert response.status_code == 200


def _valid_parts():
    return sign(valid_claims()).split(".")


def _malformed_tokens():
    header, payload, signature = _valid_parts()
    return {
        "truncated-signature": f"{header}.{payload}.{signature[:20]}",
        "truncated-payload": f"{header}.{payload[:-7]}.{signature}",
        "truncated-to-header": header,
        "one-char-segment": f"{header}.{payload}.A",
        "header-not-base64": f"~~~~.{payload}.{signature}",
        "payload-not-base64": f"{header}.A.{signature}",
        "header-not-json": f"{b64url(b'not json')}.{payload}.{signature}",
        "header-json-list": f"{b64url(b'[]')}.{payload}.{signature}",
        "payload-json-list": forge({"alg": "HS512"}, [], TEST_SECRET),
        "payload-not-utf8": (
            b64url({"alg": "HS512"}) + "." + b64url(b"\xff\xfe") + "." + signature
        ),
        "two-segments": f"{header}.{payload}",
        "four-segments": f"{header}.{payload}.{signature}.{signature}",
        "five-segments": f"{header}.{payload}.{signature}.{payload}.{signature}",
        "empty-segments": "..",
        "dots-only": "...",
        "padding-inside": f"{header}=.{payload}.{signature}",
        "kilobytes-of-junk": "A" * 6000,
        "kilobytes-forged-claims": sign(
            valid_claims(padding="x" * 6000), secret=OTHER_SECRET
        ),
        "kilobytes-of-segments": ".".join(["A" * 2000] * 3),
    }


MALFORMED = _malformed_tokens()


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_token_is_401(client, token):
    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


@pytest.fixture
def listener():
    """A socket on 127.0.0.1 that records whether anyone connected."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def assert_nobody_connected(server):
    with pytest.raises(BlockingIOError):
        connection, _ = server.accept()
        connection.close()


@pytest.mark.parametrize("header_name", ["jku", "x5u", "kid"])
@pytest.mark.parametrize(
    "alg, secret",
    [("RS256", TEST_SECRET), ("HS512", OTHER_SECRET)],
    ids=["rs256", "hs512"],
)
def test_key_url_headers_are_never_fetched(client, listener, header_name, alg, secret):
    port = listener.getsockname()[1]
    header = {
        "alg": alg,
        "typ": "JWT",
        header_name: f"http://127.0.0.1:{port}/keys.json",
        "jwk": {"kty": "oct", "k": b64url(OTHER_SECRET.encode())},
    }
    if header_name != "jku":
        header["jku"] = "http://127.0.0.1:9/keys.json"
    digest = hashlib.sha256 if alg == "RS256" else hashlib.sha512

    token = forge(header, valid_claims(), secret, digest)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))
    assert_nobody_connected(listener)


def test_key_url_headers_on_a_good_token_are_ignored(client, listener):
    port = listener.getsockname()[1]
    token = sign(
        valid_claims(),
        headers={"kid": "../../etc/passwd", "jku": f"http://127.0.0.1:{port}/"},
    )

    response = client.get(ORDERS_URL, headers=bearer(token))

    assert response.status_code == 200
    assert_nobody_connected(listener)


def _authorization_forms():
    token = sign(valid_claims())
    return {
        "bare-token": token,
        "scheme-only": "Bearer",
        "scheme-and-space": "Bearer ",
        "misspelled": "Baerer " + token,
        "bearer-no-space": "Bearer" + token,
        "two-spaces": "Bearer  " + token,
        "leading-space": " Bearer " + token,
        "trailing-space": "Bearer " + token + " ",
        "tab": "Bearer\t" + token,
        "basic-scheme": "Basic " + base64.b64encode(b"alice:secret").decode(),
        "token-scheme": "Token " + token,
        "twice": "Bearer Bearer " + token,
        "two-tokens": f"Bearer {token}, Bearer {token}",
        "quoted": f'Bearer "{token}"',
    }


REFUSED_FORMS = _authorization_forms()


@pytest.mark.parametrize("value", REFUSED_FORMS.values(), ids=REFUSED_FORMS.keys())
def test_authorization_not_bearer_space_token_is_401(client, value):
    response = client.get(ORDERS_URL, headers={"Authorization": value})

    assert_refused(response, token_sent=True)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_accepted_in_any_case(client, scheme):
    token = sign(valid_claims())

    response = client.get(ORDERS_URL, headers={"Authorization": f"{scheme} {token}"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": ""}], ids=["absent", "empty"]
)
def test_no_credentials_is_401_without_error_attribute(client, headers):
    response = client.get(ORDERS_URL, headers=headers)

    assert_refused(response, token_sent=False)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'


def test_bad_token_challenge_names_invalid_token(client):
    response = client.get(ORDERS_URL, headers=bearer("x.y.z"))

    assert_refused(response, token_sent=True)
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="orders", error="invalid_token"'
    )


def test_leeway_accepts_expiry_within_setting(make_app):
    client = make_app(JWT_LEEWAY_S="30")
    expired_lately = sign(valid_claims(exp=now() - 10))
    valid_soon = sign(valid_claims(nbf=now() + 10))

    for token in (expired_lately, valid_soon):
        assert client.get(ORDERS_URL, headers=bearer(token)).status_code == 200


def test_leeway_refuses_expiry_outside_setting(make_app):
    client = make_app(JWT_LEEWAY_S="30")
    expired_long_ago = sign(valid_claims(exp=now() - 90))
    valid_later = sign(valid_claims(nbf=now() + 90))

    for token in (expired_long_ago, valid_later):
        assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_zero_leeway_refuses_a_token_expired_a_second_ago(make_app):
    client = make_app(JWT_LEEWAY_S="0")

    token = sign(valid_claims(exp=now() - 2))

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_previous_secret_is_accepted_while_configured(make_app):
    client = make_app(SECRET_KEY_PREVIOUS=OTHER_SECRET)

    old = client.get(ORDERS_URL, headers=bearer(sign(valid_claims(), OTHER_SECRET)))
    new = client.get(ORDERS_URL, headers=bearer(sign(valid_claims())))

    assert old.status_code == 200
    assert new.status_code == 200


def test_previous_secret_is_refused_once_removed(make_app):
    client = make_app(SECRET_KEY_PREVIOUS="")

    old_token = sign(valid_claims(), OTHER_SECRET)

    response = client.get(ORDERS_URL, headers=bearer(old_token))

    assert_refused(response)


def test_token_of_previous_secret_is_refused_after_removal_once_used(make_app):
    during = make_app(SECRET_KEY_PREVIOUS=OTHER_SECRET)
    after = make_app(SECRET_KEY_PREVIOUS="")
    old_token = sign(valid_claims(), OTHER_SECRET)

    accepted = during.get(ORDERS_URL, headers=bearer(old_token))
    refused = after.get(ORDERS_URL, headers=bearer(old_token))

    assert accepted.status_code == 200
    assert_refused(refused)


def test_third_secret_is_refused_during_rotation(make_app):
    client = make_app(SECRET_KEY_PREVIOUS=OTHER_SECRET)
    third = "third-secret-" + "t" * 64

    response = client.get(ORDERS_URL, headers=bearer(sign(valid_claims(), third)))

    assert_refused(response)


def test_short_secret_is_warned_at_start_without_the_secret(make_app, caplog):
    short_secret = "short-Secret-42"
    short_previous = "old-Secret-17"

    make_app(SECRET_KEY=short_secret, SECRET_KEY_PREVIOUS=short_previous)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = "\n".join(record.getMessage() for record in warnings)
    assert "SECRET_KEY is 15 bytes" in text
    assert "SECRET_KEY_PREVIOUS is 13 bytes" in text
    assert short_secret not in caplog.text
    assert short_previous not in caplog.text


def test_long_secret_is_not_warned(make_app, caplog):
    make_app(SECRET_KEY="k" * 64)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


REASONS = {
    "expired": (sign(valid_claims(exp=now() - 3600)), "expired"),
    "wrong-secret": (sign(valid_claims(), OTHER_SECRET), "signature"),
    "wrong-audience": (sign(valid_claims(aud="x")), "wrong audience"),
    "wrong-issuer": (sign(valid_claims(iss="users")), "wrong issuer"),
    "refresh": (sign(valid_claims(typ="refresh")), "typ"),
    "alg-none": (forge({"alg": "none"}, valid_claims()), "algorithm not allowed"),
    "garbage": ("a.b.c", "not a well-formed JWT"),
}


@pytest.mark.parametrize("token, reason", REASONS.values(), ids=REASONS.keys())
def test_refusal_logs_reason_but_never_the_token(client, caplog, token, reason):
    caplog.set_level(logging.INFO)

    client.get(ORDERS_URL, headers=bearer(token))

    messages = [record.getMessage() for record in caplog.records]
    refusals = [message for message in messages if "token refused" in message]
    assert len(refusals) == 1
    assert reason in refusals[0]
    for part in token.split("."):
        if len(part) > 3:
            assert part not in caplog.text
    assert TEST_SECRET not in caplog.text
    assert OTHER_SECRET not in caplog.text


def test_token_accepted_before_is_refused_once_it_expires(client, monkeypatch):
    token = sign(valid_claims(exp=now() + 60))
    assert client.get(ORDERS_URL, headers=bearer(token)).status_code == 200

    later = time.time() + 60 + 5 + 1
    monkeypatch.setattr(auth_module.time, "time", lambda: later)

    assert_refused(client.get(ORDERS_URL, headers=bearer(token)))


def test_token_verified_under_one_secret_is_not_trusted_under_another(
    client, make_app
):
    token = sign(valid_claims())
    assert client.get(ORDERS_URL, headers=bearer(token)).status_code == 200

    other_client = make_app(SECRET_KEY=OTHER_SECRET)

    assert_refused(other_client.get(ORDERS_URL, headers=bearer(token)))


@pytest.mark.parametrize(
    "scope",
    [
        "customer\torders:fulfil",
        "customer\norders:fulfil",
        "customer\u00a0orders:fulfil",
        "customer\u3000orders:fulfil",
        "orders:fulfil\u2003",
    ],
    ids=["tab", "newline", "no-break-space", "ideographic-space", "em-space-after"],
)
def test_staff_scope_counts_only_between_plain_spaces(client, scope):
    token = sign(valid_claims(scope=scope))

    response = client.post(ORDERS_URL + "/1/fulfil", headers=bearer(token))

    assert response.status_code == 403
    assert response.get_json()["messages"] == ["FORBIDDEN"]
