"""The server's in-memory view of the datastore, kept current from its change events.

Agents' syncs, authorization checks and bundle reads are answered from here, without a
datastore query per call (SPIRE's scaling guide names those queries its bottleneck).
"""
