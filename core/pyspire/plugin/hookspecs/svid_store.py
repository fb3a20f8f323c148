"""SVIDStore (agent): keeps the X509-SVIDs of ``store_svid`` entries in an external store.

An entry created with ``-storeSVID`` is not served on the Workload API. The agent mints its
X509-SVID like any other and hands it to the SVIDStore plugin named by the entry's selector
type: an entry with selectors ``aws_secretsmanager:secretname:db`` and
``aws_secretsmanager:kmskeyid:alias/svids`` goes to the plugin declared as
``SVIDStore "aws_secretsmanager"``, and the selector values are the ``metadata`` that say
where (the server requires one selector type per such entry). The plugin parses its metadata
(``key:value`` strings) and may refuse malformed metadata with
:class:`~pyspire.plugin.errors.InvalidArgument`. A store that keeps SPIRE's JSON document (the
SVID, its key and the bundles, as SPIRE's cloud stores write it) builds it with
:func:`pyspire.plugin.svid_document.secret_document`.

The agent calls the hooks in worker threads, every few seconds for what changed, and retries
a failed call on the next round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pyspire.plugin.markers import hookspec

if TYPE_CHECKING:
    from pyspire.spiffe import Bundle, TrustDomain, X509Svid


@hookspec(firstresult=True)
def put_x509_svid(
    svid: X509Svid, bundle: Bundle, federated_bundles: Mapping[TrustDomain, Bundle], metadata: Sequence[str]
) -> None:
    """Store (or replace) ``svid``, with its private key, where ``metadata`` says.

    Called when the SVID is first minted, on every rotation, when the entry changes, and when
    the agent's trust bundle or a federated bundle the entry federates with changes.
    ``bundle`` is the agent's trust domain bundle; ``federated_bundles`` are those of the
    trust domains the entry federates with that the agent has. Raise a plugin error when the
    store could not be written: the agent logs it and calls again.
    """


@hookspec(firstresult=True)
def delete_x509_svid(metadata: Sequence[str]) -> None:
    """Remove the SVID stored where ``metadata`` says.

    Called when the entry is deleted, or when its selectors change (before the SVID is put
    under the new metadata). Raise :class:`~pyspire.plugin.errors.InvalidArgument` when the
    metadata is malformed (nothing can be deleted: the agent stops trying); any other error
    makes the agent try again.
    """
