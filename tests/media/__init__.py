"""Tests of the media path: RTP packets and endpoints, jitter buffer, media streams, DTMF, SDP and codecs."""
