"""NodeAttestor ``tpm_devid``: a node proves its DevID certificate's key lives in a genuine TPM.

The agent (:mod:`pyspire_tpm_devid.agent`, which alone needs a TPM library: tpm2-pytss)
presents its DevID certificate with the TPM's endorsement certificate and a certification of
the DevID key by a fresh attestation key; the server (:mod:`pyspire_tpm_devid.server`, plain
``cryptography``) checks both chains and the certification, then challenges the agent to sign
a nonce with the DevID key and to activate a credential made for the attestation key under
the endorsement key. The node is named after the DevID certificate:
``spiffe://<td>/spire/agent/tpm_devid/<sha1 of the certificate>``. The messages are SPIRE's
(:mod:`pyspire_tpm_devid.wire`), so either half works with SPIRE's other half.
"""
