"""sgg: scene graph generation toolkit."""

__version__ = "0.1.0"
