"""pyspire UpstreamAuthority "awssecret": the upstream CA's certificate and key come from AWS Secrets Manager."""
