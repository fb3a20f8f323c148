"""KeyManager ``hashicorp_vault``: the server's keys are keys of Vault's transit engine.

Configuration in :mod:`pyspire_vault_keymanager.config`, transit key names in
:mod:`~pyspire_vault_keymanager.naming`, what a signing request asks for in
:mod:`~pyspire_vault_keymanager.signing`, the hooks in :mod:`~pyspire_vault_keymanager.key_manager`.
The Vault connection (auth methods, token renewal) is the vault UpstreamAuthority's session.
"""
