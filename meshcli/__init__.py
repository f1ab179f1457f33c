"""meshcli: published human pose and mesh methods, one streamed pipeline."""
__version__ = "0.1.0"
