"""Notifier ``gcs_bundle``: the server's X.509 roots, as PEM, kept current in a Cloud Storage object.

On "bundle loaded" (start) and "bundle updated" the plugin writes the object with a generation
precondition, so servers racing to update it never overwrite a newer bundle with an older one
(:mod:`pyspire_gcs_bundle.notifier`).
"""
