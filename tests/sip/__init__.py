"""Tests of voipgw.sip: the stack, dialogs, registration, transports, digest auth, malformed input."""
