"""Tests of ratchet/: handshake, session, SAS, fingerprints, identities and their vectors."""
