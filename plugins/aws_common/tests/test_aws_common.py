"""The AWS plugins' shared session and error mapping, against moto's STS over real HTTP."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from pyspire.plugin import Internal, Unavailable
from pyspire_aws_common import Credentials, aws_error, error_code, session

from tests.support import moto
from tests.support.free_port import free_port
from tests.support.moto import ACCOUNT, MotoServer

aws = moto.aws
moto_server = moto.moto_server

ROLE = f"arn:aws:iam::{ACCOUNT}:role/pyspire-server"


def _refusal(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "IssueCertificate")


def test_an_answer_from_aws_is_internal_with_its_code_and_message() -> None:
    err = aws_error("failed submitting CSR", _refusal("LimitExceededException", "too many"))
    assert isinstance(err, Internal)
    assert str(err) == "failed submitting CSR: LimitExceededException: too many"
    assert error_code(_refusal("ResourceNotFoundException", "gone")) == "ResourceNotFoundException"
    assert error_code(ValueError("not an AWS answer")) == ""


def test_aws_out_of_reach_is_unavailable_and_no_credentials_says_what_to_set() -> None:
    unreachable = aws_error("describe", EndpointConnectionError(endpoint_url="https://acm-pca.example"))
    assert isinstance(unreachable, Unavailable)
    assert "cannot reach AWS" in str(unreachable)
    missing = aws_error("describe", NoCredentialsError())
    assert isinstance(missing, Internal)
    assert "set access_key_id and secret_access_key" in str(missing)


def test_static_keys_are_used_as_given(aws: MotoServer) -> None:
    found = session(Credentials(region="eu-west-1", access_key_id="AKIDEXAMPLE", secret_access_key="secret"), "t")
    credentials = found.get_credentials()
    assert credentials is not None
    assert (credentials.access_key, found.region_name) == ("AKIDEXAMPLE", "eu-west-1")


def test_an_assumed_role_gives_the_roles_session(aws: MotoServer) -> None:
    found = session(Credentials(region="us-west-2", assume_role_arn=ROLE), "pyspire-test")
    identity = found.client("sts").get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/pyspire-server/pyspire-test"


def test_a_role_that_cannot_be_assumed_is_named(monkeypatch: pytest.MonkeyPatch, aws: MotoServer) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(Unavailable, match=f"cannot assume {ROLE}"):
        session(Credentials(region="us-west-2", assume_role_arn=ROLE), "pyspire-test")
