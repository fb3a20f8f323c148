"""pyspire KeyManager ``gcp_kms``."""
