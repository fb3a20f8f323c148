"""BundlePublisher ``gcp_cloudstorage``: the server's trust bundle kept current in a Cloud Storage object.

The server hands the plugin its bundle at start, after every change and every 30 seconds;
the plugin uploads it in the configured format whenever it differs from the last one it
wrote (:mod:`pyspire_gcp_cloudstorage.publisher`).
"""
