"""SVIDStore ``aws_secretsmanager``: X509-SVIDs of ``store_svid`` entries kept in AWS Secrets Manager.

The entry's ``aws_secretsmanager:…`` selectors say which secret (:mod:`pyspire_aws_secretsmanager.secret`);
the plugin creates it tagged ``spire-svid=true``, puts each new SVID into it as SPIRE's JSON
document, refuses to touch a secret without that tag, and schedules it for deletion when the
entry goes (:mod:`pyspire_aws_secretsmanager.store`).
"""
