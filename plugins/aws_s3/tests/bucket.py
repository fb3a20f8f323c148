"""The bucket the aws_s3 tests publish to, and reading it back through boto3."""

from __future__ import annotations

import boto3

BUCKET = "trust-bundles"
REGION = "us-east-1"


def read_object(key: str, bucket: str = BUCKET) -> bytes | None:
    """The object's content, or None when there is none."""
    s3 = boto3.client("s3", region_name=REGION)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
    except s3.exceptions.NoSuchKey:
        return None
