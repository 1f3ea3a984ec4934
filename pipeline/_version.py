"""The package version, in one place (imported by pipeline/__init__.py and everything that records it)."""

__version__ = "0.1.0"
