"""Local persistent state of an endpoint: the identity key file (``keyfile``) and the contact store
(``contacts``: SQLite, WAL, versioned migrations, key history).

Only this package touches files under ``--home``; it never does protocol work itself (that is ``ratchet``).
"""
