"""pyspire KeyManager "aws_kms": the server's CA and JWT keys live and sign in AWS KMS."""
