"""NodeAttestor ``k8s_psat``: agents in Kubernetes attest with projected service account tokens.

The agent sends its pod's projected token and the cluster name (:mod:`pyspire_k8s_psat.agent`);
the server has that cluster's API server review the token and looks up the pod and its node
(:mod:`pyspire_k8s_psat.server`), naming the agent ``spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>``.
"""

from pyspire_k8s_psat.agent import AgentK8sPsat
from pyspire_k8s_psat.server import ServerK8sPsat

__all__ = ["AgentK8sPsat", "ServerK8sPsat"]
