"""Tests of voipgw.audio: codecs, WAV files, devices and the audio comparison."""
