"""pyspire KeyManager ``azure_key_vault``."""
