"""sysext-harness: boot image-based Linux systems and check systemd extensions end to end."""

__version__ = "0.1.0"
