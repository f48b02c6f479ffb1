"""subvault: layered backup for Btrfs servers."""

__version__ = "0.1.0"
