"""Audio for voipgw: Opus (``opus``), WAV files and resampling (``wav``), sources and sinks (``sources``),
sound devices (``device``) and sent-vs-received comparison (``compare``). Never touches sockets or keys.
"""
