"""Tests of voipgw.gateway: units, call flows, the gateway as a process, topologies and faults."""
