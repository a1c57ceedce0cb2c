"""Per-run SSH client keys: generated fresh, stored 0600, never reused across runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path

    @property
    def public_text(self) -> str:
        return self.public.read_text().strip()


def generate_ssh_key(directory: Path, name: str = "id_ed25519") -> SshKey:
    """Write an Ed25519 key pair in OpenSSH format; the private half is created 0600."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = directory / name
    public = directory / f"{name}.pub"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public.write_bytes(pub + b" sysext-harness\n")
    public.chmod(0o600)
    return SshKey(private=private, public=public)
