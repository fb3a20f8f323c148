"""pyspire-oidc-discovery: SPIRE's OIDC Discovery Provider, a daemon of its own.

It publishes a trust domain's JWT-SVID signing keys where OIDC relying parties (AWS IAM,
GCP workload identity federation, Vault's JWT auth, any OIDC library) look for them: the
discovery document at ``/.well-known/openid-configuration`` and the JWKS at ``/keys``.

:mod:`~pyspire_oidc_discovery.config` reads SPIRE's config file; the keys come from a
:mod:`~pyspire_oidc_discovery.sources` source (the server API, the Workload API or a file);
:mod:`~pyspire_oidc_discovery.handler` answers the requests, with the documents of
:mod:`~pyspire_oidc_discovery.documents` and the host allow-list of
:mod:`~pyspire_oidc_discovery.domains`; :mod:`~pyspire_oidc_discovery.daemon` listens and
runs it all, :mod:`~pyspire_oidc_discovery.cli` is the command line.
"""
