"""voipgw: the I/O side of the end-to-end encrypted call gateway and softphone.

It owns SIP signalling (``voipgw.sip``, the only importer of sippy), RTP (``voipgw.rtp``), codecs and audio
devices (``voipgw.audio``), the identity and contact store (``voipgw.store``), the phone and gateway roles and
the CLI. All protocol logic and cryptography live in the sans-I/O ``ratchet`` package.
"""

__version__ = "0.1.0"
