"""Tests of voipgw.bench."""
