"""Importing what was read from SPIRE into pyspire's datastore, through the DataStore plugin's hooks.

Order matters: federated bundles first (entries federate with them), then SPIRE's own trust
bundle merged into pyspire's (SPIRE's roots and JWT keys stay trusted, so the SVIDs SPIRE
issued keep verifying while workloads and agents move), then federation relationships, then
entries (in batches, their IDs kept). Running it again changes nothing: what is already there is
counted, not written twice. Agents and join tokens are not imported: agents attest to pyspire
anew (docs/migration.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pyspire.plugin.errors import AlreadyExists
from pyspire.plugin.facades import DataStore
from pyspire.plugin.records import BundleRecord
from pyspire.server.migration.spire_datastore import SpireSnapshot
from pyspire.spiffe import TrustDomain

__all__ = ["ImportReport", "MigrationError", "import_snapshot"]

_BATCH = 500


class MigrationError(Exception):
    """The snapshot cannot be imported as asked; the message says why."""


@dataclass
class ImportReport:
    """What the import did (or, in a dry run, would do)."""

    entries_created: int = 0
    entries_present: int = 0
    federated_bundles_created: int = 0
    federated_bundles_present: int = 0
    own_x509_authorities_added: int = 0
    own_jwt_authorities_added: int = 0
    relationships_created: int = 0
    relationships_present: int = 0
    agents_not_imported: int = 0
    join_tokens_not_imported: int = 0

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        return [
            f"Registration entries: {self.entries_created} imported, {self.entries_present} already present",
            f"Federated bundles: {self.federated_bundles_created} imported, "
            f"{self.federated_bundles_present} already present",
            f"Trust bundle: {self.own_x509_authorities_added} X.509 authorities and "
            f"{self.own_jwt_authorities_added} JWT keys of SPIRE's added",
            f"Federation relationships: {self.relationships_created} imported, "
            f"{self.relationships_present} already present",
            f"Not imported: {self.agents_not_imported} agents (they attest to pyspire anew) and "
            f"{self.join_tokens_not_imported} join tokens",
        ]


def _merged(current: BundleRecord | None, spire: BundleRecord, report: ImportReport) -> BundleRecord:
    if current is None:
        report.own_x509_authorities_added = len(spire.x509_authorities)
        report.own_jwt_authorities_added = len(spire.jwt_authorities)
        return spire
    have_x509 = {authority.der for authority in current.x509_authorities}
    have_jwt = {authority.key_id for authority in current.jwt_authorities}
    new_x509 = tuple(a for a in spire.x509_authorities if a.der not in have_x509)
    new_jwt = tuple(a for a in spire.jwt_authorities if a.key_id not in have_jwt)
    report.own_x509_authorities_added, report.own_jwt_authorities_added = len(new_x509), len(new_jwt)
    if not new_x509 and not new_jwt:
        return current
    return replace(
        current,
        x509_authorities=current.x509_authorities + new_x509,
        jwt_authorities=current.jwt_authorities + new_jwt,
        sequence_number=current.sequence_number + 1,
    )


def import_snapshot(
    snapshot: SpireSnapshot, datastore: DataStore, trust_domain: TrustDomain, *, dry_run: bool = False
) -> ImportReport:
    """Import ``snapshot`` for a server of ``trust_domain``; with ``dry_run`` count without writing."""
    own = next((bundle for bundle in snapshot.bundles if bundle.trust_domain == trust_domain), None)
    if own is None:
        found = ", ".join(sorted(str(b.trust_domain) for b in snapshot.bundles)) or "none"
        raise MigrationError(
            f'the SPIRE datastore has no bundle of trust domain "{trust_domain}" (it has: {found}): '
            "is it the datastore of a SPIRE server of this trust domain?"
        )
    report = ImportReport(agents_not_imported=snapshot.agents, join_tokens_not_imported=snapshot.join_tokens)
    for bundle in snapshot.bundles:
        if bundle.trust_domain == trust_domain:
            continue
        if datastore.fetch_bundle(bundle.trust_domain) is not None:
            report.federated_bundles_present += 1
            continue
        report.federated_bundles_created += 1
        if not dry_run:
            try:
                datastore.create_bundle(bundle)
            except AlreadyExists:  # another writer got there first: same outcome
                report.federated_bundles_created -= 1
                report.federated_bundles_present += 1
    if dry_run:
        _merged(datastore.fetch_bundle(trust_domain), own, report)
    else:
        datastore.modify_bundle(trust_domain, lambda current: _merged(current, own, report))
    for relationship in snapshot.relationships:
        if datastore.fetch_federation_relationship(relationship.trust_domain) is not None:
            report.relationships_present += 1
            continue
        report.relationships_created += 1
        if not dry_run:
            datastore.create_federation_relationship(relationship)
    entries = list(snapshot.entries)
    for start in range(0, len(entries), _BATCH):
        batch = entries[start : start + _BATCH]
        if dry_run:
            present = sum(1 for entry in batch if datastore.fetch_registration_entry(entry.id) is not None)
            report.entries_present += present
            report.entries_created += len(batch) - present
            continue
        for outcome in datastore.create_registration_entries(batch):
            if outcome.created:
                report.entries_created += 1
            else:
                report.entries_present += 1
    return report
