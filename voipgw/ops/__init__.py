"""Operations building blocks for ``voipgw gateway``: config schema, control socket, metrics, structured logs.
Each module is usable on its own; none of them touches SIP, RTP or key material."""
