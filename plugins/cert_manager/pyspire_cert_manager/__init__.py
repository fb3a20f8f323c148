"""UpstreamAuthority ``cert-manager``: the server's CA signed by a cert-manager issuer.

Each CA the server prepares is sent to the cluster as a cert-manager ``CertificateRequest``
for the configured issuer; once the issuer has signed it, the certificate chain and the CA
come back to the server (:mod:`pyspire_cert_manager.authority`), and finished requests are
deleted (:mod:`pyspire_cert_manager.certificate_requests`).
"""
