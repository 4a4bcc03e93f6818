"""Tests of the command line (voipgw.cli)."""
