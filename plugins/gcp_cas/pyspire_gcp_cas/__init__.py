"""pyspire UpstreamAuthority ``gcp_cas``: the server's CA is issued by Google Cloud Certificate Authority Service."""
