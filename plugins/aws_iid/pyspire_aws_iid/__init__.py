"""NodeAttestor ``aws_iid``: EC2 instances attest with the identity document AWS signs.

The agent reads the instance identity document and its PKCS #7 signature from the instance
metadata service (:mod:`pyspire_aws_iid.agent`); the server verifies the signature against
the region's AWS certificate, asks EC2 about the instance and names the node
``spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance>`` (:mod:`pyspire_aws_iid.server`).

The package imports nothing: the entry points name :mod:`~pyspire_aws_iid.agent` and
:mod:`~pyspire_aws_iid.server`, so an agent never imports boto3, which only the server needs.
"""
