"""Notifier ``k8sbundle``: the server's X.509 roots kept current in Kubernetes.

On "bundle loaded" and "bundle updated" the plugin writes the PEM of the bundle's X.509
authorities to a ConfigMap (and, when asked, to labelled webhook configurations and
APIServices) in each configured cluster (:mod:`pyspire_k8sbundle.notifier`), through the
official Kubernetes client (:mod:`pyspire_k8sbundle.targets`).
"""
