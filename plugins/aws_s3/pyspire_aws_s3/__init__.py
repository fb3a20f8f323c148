"""BundlePublisher ``aws_s3``: the server's trust bundle kept current in an Amazon S3 object.

The server hands the plugin its bundle at start, after every change and every 30 seconds;
the plugin writes it with ``PutObject`` in the configured format whenever it differs from
the last one it wrote (:mod:`pyspire_aws_s3.publisher`).
"""
