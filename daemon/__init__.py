"""stopwise daemon: the pure core (``stopwise.daemon.core``), the Kafka shell
(``stopwise.daemon.shell``) and what both share: config, record contracts,
context keys, signing and the exception root."""

__version__ = "0.1.0"
