"""The web phone: the gateway serves a page where an inside user logs in with its inside credentials
(``[web]`` in the gateway config; off by default). ``server.py`` serves the page and the JSON-over-WebSocket
protocol (``protocol.py``, docs/PROTOCOL.md Part D), ``sessions.py`` owns logins and session tokens.

Design: the web phone is an inside phone that lives in the gateway process, so that a browser's call takes the
same B2BUA path, policy, labels and SAS handling as a SIP phone's; nothing here touches the outside leg, so no
clear audio can leave the gateway through it.
"""
