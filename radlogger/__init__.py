"""radloggerd: an embedded, threaded data-logger daemon for streaming laboratory instruments."""

__version__ = "0.1.0"
