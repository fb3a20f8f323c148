"""NodeAttestor ``sshpop``: a node proves it holds the key of an SSH host certificate.

The agent sends its host certificate (:mod:`pyspire_sshpop.agent`); the server checks it was
issued as a host certificate by one of the trusted CAs and is valid now, then has the agent
sign a fresh nonce with the host key (:mod:`pyspire_sshpop.server`). The node is named after
the certificate's fingerprint: ``spiffe://<td>/spire/agent/sshpop/<fingerprint>``. The
certificate rules are in :mod:`pyspire_sshpop.certificates`, the messages exchanged (SPIRE's,
so either half works with SPIRE's other half) in :mod:`pyspire_sshpop.handshake`.
"""
