"""NodeAttestor ``azure_imds``: Azure VMs attest with the attested document IMDS gives them.

The server sends a nonce; the agent asks the Instance Metadata Service for the attested
document over that nonce (a PKCS#7 SignedData Azure signs) and names its tenant domain
(:mod:`pyspire_azure_imds.agent`). The server verifies the signature and the signing chain,
checks the nonce, the tenant and the subscription, reads the VM and its network from Azure
Resource Graph and names the node
``spiffe://<td>/spire/agent/azure_imds/<tenant_id>/<subscription_id>/<vm_id>``
(:mod:`pyspire_azure_imds.server`).

The package imports nothing: the entry points name the two halves, so an agent never imports
the Azure SDKs, which only the server needs.
"""
