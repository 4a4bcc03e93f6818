"""Local persistent state of an endpoint: the identity key file (``keyfile``) and, later, the contact store.

Only this package touches files under ``--home``; it never does protocol work itself (that is ``ratchet``).
"""
