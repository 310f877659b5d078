"""din: composable commands for a Decentralized Intelligence Network."""

__version__ = "0.1.0"
