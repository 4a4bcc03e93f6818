"""Tests of voipgw.ops: configuration, control socket, logs, metrics, service."""
