"""NodeAttestor ``gcp_iit``: Compute Engine instances attest with Google-signed identity tokens.

The agent asks the metadata server for an instance identity token (:mod:`pyspire_gcp_iit.agent`);
the server verifies it against Google's published certificates, checks the audience and the
project allow-list, and names the node ``spiffe://<td>/spire/agent/gcp_iit/<project>/<instance>``
(:mod:`pyspire_gcp_iit.server`).

The package imports nothing: the entry points name :mod:`~pyspire_gcp_iit.agent` and
:mod:`~pyspire_gcp_iit.server`, so an agent never imports google-auth, which only the server needs.
"""
