"""SPIFFE Federation for the server: serve this trust domain's bundle, fetch the partners'.

- :mod:`~pyspire.server.federation.documents`: datastore bundle records <-> SPIFFE bundles.
- :mod:`~pyspire.server.federation.endpoint`: the bundle endpoint (``GET /`` over HTTPS, with
  the ``https_spiffe`` or ``https_web`` profile).
- :mod:`~pyspire.server.federation.fetch`: one authenticated fetch of a partner's bundle.
- :mod:`~pyspire.server.federation.refresher`: keeps every relationship's bundle fresh on the
  partner's refresh hint, and stores what it fetches so agents deliver it to workloads.
"""
