"""pyspire UpstreamAuthority "aws_pca": the server's CA is issued by AWS Private CA (ACM PCA)."""
