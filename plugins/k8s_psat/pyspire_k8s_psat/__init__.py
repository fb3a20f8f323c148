"""Kubernetes for pyspire: node attestation ``k8s_psat`` and workload attestation ``k8s``.

NodeAttestor ``k8s_psat``: the agent sends its pod's projected service account token and the
cluster name (:mod:`pyspire_k8s_psat.agent`); the server has that cluster's API server review
the token and looks up the pod and its node (:mod:`pyspire_k8s_psat.server`), naming the agent
``spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>``.

WorkloadAttestor ``k8s`` (:mod:`pyspire_k8s_psat.workload`): a calling process's pod and
container, from its cgroups and the kubelet.

The package imports nothing: each entry point names its own module, so an agent never
imports the Kubernetes client, which only the server half needs.
"""
