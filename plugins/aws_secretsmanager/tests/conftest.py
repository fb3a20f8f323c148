"""Fixtures for the aws_secretsmanager tests: one moto server for the session, reset for each test."""

from __future__ import annotations

from tests.support import moto

aws = moto.aws
moto_server = moto.moto_server
