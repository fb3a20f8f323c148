"""Moving a SPIRE deployment to pyspire: read SPIRE's datastore (never writing it), import into pyspire's."""
