"""UpstreamAuthority ``vault``: HashiCorp Vault's PKI secrets engine signs the server's CA.

Configuration and its environment fallbacks live in :mod:`pyspire_vault_upstream.config`,
the logged-in, self-renewing Vault client in :mod:`pyspire_vault_upstream.session`, and the
hook that asks for and checks the intermediate in :mod:`pyspire_vault_upstream.authority`.

The package imports nothing: the entry point names :mod:`~pyspire_vault_upstream.authority`.
"""
