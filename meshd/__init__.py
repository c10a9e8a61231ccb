"""meshd: emergency mesh messaging daemon for Meshtastic LoRa networks."""

__version__ = "0.1.0"
