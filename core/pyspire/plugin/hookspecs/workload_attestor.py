"""WorkloadAttestor: finds the selectors of the process calling the Workload API.

Broadcast: every configured workload attestor is asked about every caller, and the
workload's selectors are the union of their answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspire.plugin.markers import hookspec


@hookspec(firstresult=True)
def attest_workload(pid: int) -> Sequence[str]:
    """Return selector values for process ``pid`` (``"uid:1000"``, ``"ns:default"``...).

    Called once per Workload API call, in a worker thread; keep it fast (tens of
    microseconds to a few milliseconds) and cache what is expensive (hashes of binaries).
    The values become selectors of the plugin's type (``unix:uid:1000``).

    Return an empty sequence only when the process genuinely has nothing this plugin can say
    (a Kubernetes attestor asked about a process outside any pod). When the plugin cannot
    find out — the process is gone, ``/proc`` cannot be read, the kubelet is unreachable —
    raise a plugin error: the agent then refuses the call (``UNAVAILABLE``) instead of
    serving an identity chosen on partial facts.
    """
