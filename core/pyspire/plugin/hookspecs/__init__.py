"""Hook specifications: the plugin author's API, one module per plugin type.

Every plugin implements the :mod:`~pyspire.plugin.hookspecs.lifecycle` hooks plus those of
its type. Hooks are plain synchronous functions (the daemons call them from worker threads,
so a plugin may block on boto3, hvac or google-auth). A plugin may accept fewer arguments
than a hook offers: pluggy passes only those it names, so new arguments never break it.
"""

from pyspire.plugin.hookspecs import (
    agent_node_attestor,
    bundle_publisher,
    credential_composer,
    datastore,
    key_manager,
    lifecycle,
    notifier,
    server_node_attestor,
    svid_store,
    upstream_authority,
    workload_attestor,
)

__all__ = [
    "agent_node_attestor",
    "bundle_publisher",
    "credential_composer",
    "datastore",
    "key_manager",
    "lifecycle",
    "notifier",
    "server_node_attestor",
    "svid_store",
    "upstream_authority",
    "workload_attestor",
]
