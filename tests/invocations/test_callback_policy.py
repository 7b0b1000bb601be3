"""The pure parts of callbacks: signatures (signing), the retry policy (callbacks.decide),
the callback URL check, how a result is put in the payload, and the configured secret."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gantry.invocations import signing
from gantry.invocations.callbacks import (BACKOFF_MAX, MAX_ATTEMPTS, CallbackSecretError, CallbackState, Failure,
                                          Outcome, backoff, check_callback_url, configured_secret, decide,
                                          payload)
from gantry.invocations.model import Invocation, State, decoded_result as decode_result
from gantry.manifest import DEFAULT_TENANT

SECRET = b"s" * 32
BODY = b'{"id":"abc","state":"succeeded"}'


def test_sign_is_hmac_sha256_over_timestamp_dot_body():
    header = signing.sign(SECRET, BODY, 1700000000)
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify(SECRET, header, BODY, now=1700000000)


@pytest.mark.parametrize("now, ok", [(1700000000 + 300, True), (1700000000 - 300, True),
                                     (1700000000 + 301, False), (1700000000 - 301, False)])
def test_verify_refuses_stale_and_future_timestamps(now, ok):
    assert signing.verify(SECRET, signing.sign(SECRET, BODY, 1700000000), BODY, now=now) is ok


def test_verify_refuses_another_body_secret_or_a_mangled_header():
    header = signing.sign(SECRET, BODY, 100)
    assert not signing.verify(SECRET, header, BODY + b" ", now=100)
    assert not signing.verify(b"t" * 32, header, BODY, now=100)
    # the timestamp is signed: moving it forward breaks the signature
    assert not signing.verify(SECRET, header.replace("t=100", "t=101"), BODY, now=100)
    for bad in ("", "v1=" + "0" * 64, "t=100", "t=abc,v1=00", "t=100,t=100," + header.split(",")[1],
                "t=-100,v1=00", "garbage"):
        assert not signing.verify(SECRET, bad, BODY, now=100), bad


def test_verify_accepts_any_of_several_signatures_and_secrets_for_rotation():
    old, new = b"o" * 32, b"n" * 32
    both = f"t=100,v1={signing.digest(old, BODY, 100)},v1={signing.digest(new, BODY, 100)},v2=future"
    assert signing.verify(old, both, BODY, now=100) and signing.verify(new, both, BODY, now=100)
    assert signing.verify([b"x" * 32, new], signing.sign(new, BODY, 100), BODY, now=100)
    assert not signing.verify([b"x" * 32, b"y" * 32], both, BODY, now=100)


def test_tenant_secrets_are_derived_and_distinct():
    assert signing.DEFAULT_TENANT == DEFAULT_TENANT
    assert signing.tenant_secret(SECRET, DEFAULT_TENANT) == SECRET
    acme = signing.tenant_secret(SECRET, "acme")
    assert acme == hmac.new(SECRET, b"tenant:acme", hashlib.sha256).digest()
    assert acme != signing.tenant_secret(SECRET, "globex") and acme != SECRET
    assert acme != signing.tenant_secret(b"r" * 32, "acme")       # rotates with the platform secret


def test_backoff_doubles_from_one_second_up_to_five_minutes():
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]
    assert backoff(20) == BACKOFF_MAX == 300


@pytest.mark.parametrize("outcome, state", [
    (Outcome(status=200), CallbackState.DELIVERED),
    (Outcome(status=204), CallbackState.DELIVERED),
    (Outcome(status=500), CallbackState.PENDING),
    (Outcome(status=503), CallbackState.PENDING),
    (Outcome(status=429), CallbackState.PENDING),
    (Outcome(failure=Failure.CONNECT, detail="refused"), CallbackState.PENDING),
    (Outcome(failure=Failure.BROKEN, detail="reset"), CallbackState.PENDING),
    (Outcome(status=400), CallbackState.FAILED),
    (Outcome(status=404), CallbackState.FAILED),
    (Outcome(status=302), CallbackState.FAILED),
    (Outcome(failure=Failure.READ_TIMEOUT, detail="no answer within 10s"), CallbackState.FAILED),
    (Outcome(failure=Failure.REFUSED, detail="bad url"), CallbackState.FAILED),
])
def test_decide(outcome, state):
    decision = decide(outcome, 1, now=1000.0)
    assert decision.state == state
    assert decision.due == (1001.0 if state == CallbackState.PENDING else None)
    assert bool(decision.error) == (state != CallbackState.DELIVERED)


def test_decide_gives_up_after_the_last_attempt_and_never_retries_a_read_timeout():
    assert decide(Outcome(status=500), MAX_ATTEMPTS - 1, 0.0).due == backoff(MAX_ATTEMPTS - 1)
    last = decide(Outcome(status=500), MAX_ATTEMPTS, 0.0)
    assert last.state == CallbackState.FAILED and f"after {MAX_ATTEMPTS} attempts" in last.error
    timeout = decide(Outcome(failure=Failure.READ_TIMEOUT, detail="no answer within 10s of sending"), 1, 0.0)
    assert timeout.state == CallbackState.FAILED and "may have acted" in timeout.error


@pytest.mark.parametrize("url, error", [
    ("https://example.com/hook", None),
    ("http://10.0.0.1:8080/a?b=c", None),
    ("http://[::1]:9/x", None),
    ("", "empty"),
    ("ftp://example.com/", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("https:///path", "no host"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://example.com/a b", "no spaces"),
    ("https://exämple.com/", "ASCII"),
    ("https://example.com:99999/", "not a URL"),
    ("https://example.com/" + "a" * 2048, "longer than 2048"),
])
def test_check_callback_url(url, error):
    found = check_callback_url(url)
    assert (found is None) if error is None else (error in found), found


def _inv(result: bytes | None, result_type: str) -> Invocation:
    return Invocation(id="i" * 32, function="fn", tenant="default", state=State.SUCCEEDED, status=200,
                      result=result, result_type=result_type,
                      callback={"url": "http://x/", "state": "delivering", "attempts": 1, "error": None,
                                "status": None})


@pytest.mark.parametrize("result, result_type, value, encoding", [
    (b'{"a":[1,2]}', "application/json", {"a": [1, 2]}, None),
    (b"null", "application/problem+json", None, None),
    (b"h\xc3\xa9", "text/plain; charset=utf-8", "h\u00e9", None),
    (b"\x00\xff", "application/octet-stream", base64.b64encode(b"\x00\xff").decode(), "base64"),
    (b"\xff", "text/plain", base64.b64encode(b"\xff").decode(), "base64"),      # not UTF-8
    (b"{nope", "application/json", base64.b64encode(b"{nope").decode(), "base64"),
])
def test_decode_result_and_payload(result, result_type, value, encoding):
    inv = _inv(result, result_type)
    assert decode_result(inv) == (value, encoding)
    view = payload(inv)
    assert view["result"] == value and view["result_type"] == result_type and view["id"] == inv.id
    assert view.get("result_encoding") == encoding and "callback" not in view


def test_payload_without_a_result():
    view = payload(_inv(None, ""))
    assert decode_result(_inv(None, "")) == (None, None) and "result" not in view and "result_encoding" not in view


def test_configured_secret(tmp_path):
    assert configured_secret({}) is None
    assert configured_secret({"GANTRY_CALLBACK_SECRET": " " + "k" * 40 + "\n"}) == b"k" * 40
    path = tmp_path / "secret"
    path.write_text("f" * 64 + "\n")
    assert configured_secret({"GANTRY_CALLBACK_SECRET_FILE": str(path)}) == b"f" * 64
    for env, message in [({"GANTRY_CALLBACK_SECRET": "short"}, "at least 32"),
                         ({"GANTRY_CALLBACK_SECRET": "k" * 40, "GANTRY_CALLBACK_SECRET_FILE": str(path)}, "not both"),
                         ({"GANTRY_CALLBACK_SECRET_FILE": str(tmp_path / "missing")}, "cannot read")]:
        with pytest.raises(CallbackSecretError, match=message):
            configured_secret(env)
