"""Command-line interface: ``voipgw <command>``. One module per command family, each exposing ``register``."""
