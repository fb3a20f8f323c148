"""What SPIRE's datastore refuses to store as a registration entry (``validateRegistrationEntry``).

These checks come after a request is converted, as in SPIRE, where they live in the sql
datastore; the API reports them as SPIRE does (``failed to create entry: datastore-validation:
invalid registration entry: ...``) whatever DataStore plugin pyspire runs.
"""

from __future__ import annotations

import re
from typing import Final

from pyspire.plugin.records import RegistrationEntry

__all__ = ["ENTRY_ID_MAX_LENGTH", "entry_problem"]

ENTRY_ID_MAX_LENGTH: Final = 255
_ENTRY_ID: Final = re.compile(r"[-._0-9A-Za-z]*")
PREFIX: Final = "datastore-validation: "


def entry_problem(entry: RegistrationEntry, *, new: bool) -> str | None:
    """SPIRE's reason for refusing to store ``entry``, or None when it may be stored.

    ``new`` entries also have their ID checked (an update cannot change it). The store_svid
    rules hold on update too: an update must not make an entry that creating it would refuse.
    """
    if entry.store_svid:
        if entry.disable_x509_svid_prefetch:
            return PREFIX + "specifying cache behaviour is incompatible with storable SVIDs"
        if len({selector.type for selector in entry.selectors}) > 1:
            # An SVIDStore plugin is chosen by the selectors' type: one entry, one store.
            return PREFIX + "invalid registration entry: selector types must be the same when store SVID is enabled"
    if new:
        if len(entry.id.encode()) > ENTRY_ID_MAX_LENGTH:
            return PREFIX + "invalid registration entry: entry ID too long"
        if not _ENTRY_ID.fullmatch(entry.id):
            return PREFIX + "invalid registration entry: entry ID contains invalid characters"
    return None
