"""The package's version, importable from every layer without importing `zoo` itself."""
__version__ = "0.1.0"
