"""Tests of the softphone: whole calls between real processes, call flows, configuration."""
