"""Reliability measurements (docs/RELIABILITY.md): impairment profiles run on the real media ratchet."""
