"""BundlePublisher ``k8s_configmap``: the server's trust bundle kept current in Kubernetes ConfigMaps.

The server hands the plugin its bundle at start, after every change and every 30 seconds;
when it differs from the last one published, the plugin applies it (server-side apply) to
the ConfigMap of every configured cluster, in each cluster's format
(:mod:`pyspire_k8s_configmap.publisher`).
"""
