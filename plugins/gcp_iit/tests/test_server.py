"""The server plugin, loaded as the daemon loads it, against Google's endpoints on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Internal, InvalidArgument, PermissionDenied
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.gcp_iit.tests.fakes import GoogleFake, SigningKey, sign_token


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("gcp_iit never challenges")


def attestor(tmp_path: Path, google: GoogleFake, **plugin_data: Any) -> ServerNodeAttestor:
    data = {"projectid_allow_list": ["project-123"], "google_certs_url": google.certs_url, **plugin_data}
    handle = load_plugin("server", "NodeAttestor", "gcp_iit", data, make_core_config(tmp_path))
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def with_metadata(tmp_path: Path, google: GoogleFake, **plugin_data: Any) -> ServerNodeAttestor:
    return attestor(
        tmp_path,
        google,
        use_instance_metadata=True,
        service_account_file=str(google.service_account_file(tmp_path)),
        compute_endpoint=google.base,
        **plugin_data,
    )


def attest(handle: ServerNodeAttestor, token: str | bytes) -> AttestationResult:
    return handle.attest(token.encode() if isinstance(token, str) else token, no_challenge)


def test_token_gives_spire_path_and_selectors(tmp_path: Path, google: GoogleFake) -> None:
    result = attest(attestor(tmp_path, google), google.token())
    assert result.agent_path == "/gcp_iit/project-123/5511237012345678901"
    assert not result.can_reattest
    assert result.selector_values == (
        "project-id:project-123",
        "zone:us-west1-b",
        "instance-name:blog-server",
        "sa:123456789-compute@developer.gserviceaccount.com",
    )


def test_agent_path_template_fields(tmp_path: Path, google: GoogleFake) -> None:
    template = "/gcp/{{ .ProjectNumber }}/{{ .Zone }}/{{ .InstanceName }}/{{ .ServiceAccount }}"
    result = attest(attestor(tmp_path, google, agent_path_template=template), google.token())
    assert (
        result.agent_path == "/gcp/123456789012/us-west1-b/blog-server/123456789-compute_developer.gserviceaccount.com"
    )


def test_instance_metadata_adds_tags_and_allowed_labels_and_metadata(tmp_path: Path, google: GoogleFake) -> None:
    handle = with_metadata(tmp_path, google, allowed_label_keys=["env"], allowed_metadata_keys=["role"])
    values = attest(handle, google.token()).selector_values
    assert {"tag:http-server", "tag:blog", "label:env:prod", "metadata:role:frontend"} <= set(values)
    assert not any(v.startswith(("label:team", "metadata:startup-script")) for v in values)
    # The API was reached with an access token google-auth obtained with the service account.
    assert "/token" in google.requests


def test_metadata_value_over_the_limit_fails_attestation(tmp_path: Path, google: GoogleFake) -> None:
    handle = with_metadata(tmp_path, google, allowed_metadata_keys=["startup-script"])
    with pytest.raises(Internal, match=r"exceeded value limit \(500 > 128\)"):
        attest(handle, google.token())


def test_metadata_without_a_value_keeps_its_trailing_colon(tmp_path: Path, google: GoogleFake) -> None:
    google.instance.metadata["flag"] = None
    values = attest(with_metadata(tmp_path, google, allowed_metadata_keys=["flag"]), google.token()).selector_values
    assert "metadata:flag:" in values


def test_compute_api_down_is_internal(tmp_path: Path, google: GoogleFake) -> None:
    handle = with_metadata(tmp_path, google)
    google.compute_down = True
    with pytest.raises(Internal, match="failed to fetch instance metadata: HTTP 503"):
        attest(handle, google.token())


def test_google_certificates_unreachable_is_internal(tmp_path: Path, google: GoogleFake) -> None:
    handle = attestor(tmp_path, google, google_certs_url="http://127.0.0.1:9/oauth2/v1/certs")
    with pytest.raises(Internal, match="cannot fetch Google's certificates"):
        attest(handle, google.token())


def test_certificates_are_cached_for_their_max_age(tmp_path: Path, google: GoogleFake) -> None:
    handle = attestor(tmp_path, google)
    attest(handle, google.token())
    attest(handle, google.token())
    assert google.requests.count("/oauth2/v1/certs") == 1


def test_unknown_key_ids_do_not_make_the_server_hammer_google(tmp_path: Path, google: GoogleFake) -> None:
    handle = attestor(tmp_path, google)
    attest(handle, google.token())
    for n in range(5):
        with pytest.raises(InvalidArgument, match="does not publish"):
            attest(handle, sign_token(SigningKey(f"forged-{n}"), google.instance.claims()))
    assert google.requests.count("/oauth2/v1/certs") == 1


def test_a_rotated_key_is_used_once_the_cache_expires(tmp_path: Path, google: GoogleFake) -> None:
    google.certs_max_age = 0
    handle = attestor(tmp_path, google)
    attest(handle, google.token())
    google.signing_keys.insert(0, SigningKey("key-2"))
    assert attest(handle, google.token()).agent_path.endswith(google.instance.instance_id)
    assert google.requests.count("/oauth2/v1/certs") == 2


# --- what a forger might send ------------------------------------------------------------


def test_token_signed_by_an_unpublished_key_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    forged = sign_token(SigningKey("key-1"), google.instance.claims())  # same key ID, other key
    with pytest.raises(InvalidArgument, match="signature does not verify with Google's key 'key-1'"):
        attest(attestor(tmp_path, google), forged)
    unknown = sign_token(SigningKey("key-9"), google.instance.claims())
    with pytest.raises(InvalidArgument, match="does not publish"):
        attest(attestor(tmp_path, google), unknown)


def test_truncated_token_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    with pytest.raises((InvalidArgument, PermissionDenied)):
        attest(attestor(tmp_path, google), google.token()[:-20])


def test_expired_token_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    with pytest.raises(PermissionDenied, match="expired"):
        attest(attestor(tmp_path, google), google.token(lifetime=-120))


def test_wrong_audience_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    with pytest.raises(PermissionDenied, match="audience"):
        attest(attestor(tmp_path, google), google.token(audience="https://example.com"))


def test_other_issuer_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    with pytest.raises(PermissionDenied, match="not issued by Google"):
        attest(attestor(tmp_path, google), google.token(iss="https://evil.example"))


def test_project_off_the_allow_list_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    google.instance.project_id = "someone-elses"
    with pytest.raises(PermissionDenied, match='"someone-elses" is not in the allow list'):
        attest(attestor(tmp_path, google), google.token())


def test_token_without_compute_engine_claims_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    with pytest.raises(PermissionDenied, match="format=full"):
        attest(attestor(tmp_path, google), google.token(full=False))


def test_hs256_token_is_refused(tmp_path: Path, google: GoogleFake) -> None:
    token = jwt.encode(google.instance.claims(), "s" * 32, algorithm="HS256", headers={"kid": "key-1"})
    with pytest.raises(InvalidArgument, match="RS256"):
        attest(attestor(tmp_path, google), token)


@pytest.mark.parametrize(
    ("payload", "message"), [(b"not a jwt", "not a JWT"), (b"\xff\xfe", "not a JWT"), (b"x" * 20000, "larger than")]
)
def test_malformed_payloads_are_invalid(tmp_path: Path, google: GoogleFake, payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        attest(attestor(tmp_path, google), payload)


@pytest.mark.parametrize(
    ("plugin_data", "message"),
    [
        ({"projectid_allow_list": []}, "projectid_allow_list"),
        ({"max_metadata_value_size": 0}, "must be positive"),
        ({"agent_path_template": "{{ if .Zone }}x{{ end }}"}, "unsupported template action"),
        ({"use_instance_metadata": True, "service_account_file": "/nonexistent.json"}, "service_account_file"),
        ({"projectid_allowlist": ["p"]}, "projectid_allowlist"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, google: GoogleFake, plugin_data: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        attestor(tmp_path, google, **plugin_data)
