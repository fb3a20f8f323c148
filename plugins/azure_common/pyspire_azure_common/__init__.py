"""What pyspire's Azure plugins share; the modules are imported one by one, never from here.

:mod:`~pyspire_azure_common.imds` is for agent halves (standard library only);
:mod:`~pyspire_azure_common.credentials` imports azure-identity, for server halves.
"""
