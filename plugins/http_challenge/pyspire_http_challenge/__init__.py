"""NodeAttestor ``http_challenge``: a node proves it answers HTTP at the host name it claims.

The agent tells the server its host name, its name on that host and a port
(:mod:`pyspire_http_challenge.agent`); the server sends a nonce and fetches it back from
``http://<hostname>:<port>/.well-known/spiffe/nodeattestor/http_challenge/<agentname>/challenge``
(:mod:`pyspire_http_challenge.server`), and names the node
``spiffe://<td>/spire/agent/http_challenge/<hostname>``. What the halves exchange is in
:mod:`pyspire_http_challenge.protocol`.
"""
