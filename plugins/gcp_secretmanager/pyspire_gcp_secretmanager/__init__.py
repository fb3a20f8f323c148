"""SVIDStore ``gcp_secretmanager``: X509-SVIDs of ``store_svid`` entries kept in Google Cloud Secret Manager.

The entry's ``gcp_secretmanager:…`` selectors say which secret, in which project, and who may
read it (:mod:`pyspire_gcp_secretmanager.options`); the plugin creates the secret labelled
``spire-svid=<SHA-1 of the trust domain>``, adds each new SVID to it as a version holding
SPIRE's JSON document, refuses to touch a secret without that label, and deletes it when
the entry goes (:mod:`pyspire_gcp_secretmanager.store`).
"""
