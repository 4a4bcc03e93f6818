"""RTP/RTCP for voipgw: packet formats (``packet``), one asyncio UDP endpoint per call (``endpoint``) and the
frame-index jitter buffer (``jitter``). Never decrypts or decodes: payloads stay opaque bytes here.
"""
