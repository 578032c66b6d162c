"""streamai: real-time media AI at the edge."""

__version__ = "0.1.0"
