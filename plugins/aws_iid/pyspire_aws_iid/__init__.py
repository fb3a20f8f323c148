"""NodeAttestor ``aws_iid``: EC2 instances attest with the identity document AWS signs.

The agent reads the instance identity document and its PKCS #7 signature from the instance
metadata service (:mod:`pyspire_aws_iid.agent`); the server verifies the signature against
the region's AWS certificate, asks EC2 about the instance and names the node
``spiffe://<td>/spire/agent/aws_iid/<account>/<region>/<instance>`` (:mod:`pyspire_aws_iid.server`).
"""

from pyspire_aws_iid.agent import AgentAwsIid
from pyspire_aws_iid.server import ServerAwsIid

__all__ = ["AgentAwsIid", "ServerAwsIid"]
