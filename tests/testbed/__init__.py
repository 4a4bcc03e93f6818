"""Real SIP/RTP test-bed components on loopback (Kamailio, voipgw SIP peers, ports, child processes).

Everything here starts processes on 127.0.0.0/8 only and stops each one by the PID it started.
"""
