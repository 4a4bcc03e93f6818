"""Tests of voipgw.store and voipgw.trust: contacts, key files, the trust policy."""
