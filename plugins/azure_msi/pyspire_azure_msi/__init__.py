"""NodeAttestor ``azure_msi``: Azure VMs attest with a managed identity token (SPIRE keeps it for existing users).

The agent asks IMDS for an access token of the VM's managed identity for ``resource_id``
(:mod:`pyspire_azure_msi.agent`); the server verifies it against Microsoft Entra's signing keys,
checks the tenant, the audience and the expiry, finds the VM by the identity's principal ID and
names the node ``spiffe://<td>/spire/agent/azure_msi/<tenant_id>/<principal_id>``
(:mod:`pyspire_azure_msi.server`). ``azure_imds`` is the newer attestor and needs no managed identity.

The package imports nothing: an agent never imports the Azure SDKs, which only the server needs.
"""
