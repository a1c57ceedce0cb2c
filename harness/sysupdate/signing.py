"""A GPG key for one run, to sign update channels as distributions do (SHA256SUMS.gpg).

The key lives in a private GNUPGHOME inside the run directory and is generated per run
(ed25519, no passphrase, never leaves the host), unless $SYSEXT_HARNESS_GPG_KEY names an
exported secret key (`gpg --export-secret-keys`) to import instead. gpg starts an agent
on first use; `close()` stops it, so no agent outlives the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import ConfigError
from harness.run import run

USER_KEY_ENV = "SYSEXT_HARNESS_GPG_KEY"
KEY_UID = "sysext-harness run key <run@sysext-harness.invalid>"


class SigningKey:
    """Signs files with a per-run (or user-given) key; exports the public keyring."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self._env = {**os.environ, "GNUPGHOME": str(home)}
        self._ready = False

    def _gpg(self, *args: str | Path, input: bytes | None = None) -> bytes:
        proc = run(["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback",
                    "--passphrase", "", *args], env=self._env, input=input, timeout=120)
        return proc.stdout or b""

    def ensure(self) -> None:
        """Generate (or import) the key the first time it is needed."""
        if self._ready:
            return
        given = os.environ.get(USER_KEY_ENV)
        if given:
            path = Path(given)
            if not path.is_file():
                raise ConfigError("no such file", key=USER_KEY_ENV, value=given,
                                  allowed="an exported secret key (gpg --export-secret-keys)")
            self._gpg("--import", path)
        else:
            self._gpg("--quick-generate-key", KEY_UID, "ed25519", "sign", "never")
        self._ready = True

    def public_keyring(self) -> bytes:
        """The public key in binary form: usable as gpg `--keyring`, which is how
        systemd-sysupdate reads /etc/systemd/import-pubring.gpg."""
        self.ensure()
        return self._gpg("--export")

    def fingerprint(self) -> str:
        self.ensure()
        out = self._gpg("--with-colons", "--list-secret-keys").decode()
        for line in out.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        return ""

    def sign(self, path: Path) -> Path:
        """Write the detached binary signature `path`.gpg."""
        self.ensure()
        signature = path.with_name(path.name + ".gpg")
        self._gpg("--yes", "--detach-sign", "--output", signature, path)
        return signature

    def close(self) -> None:
        if self._ready:
            run(["gpgconf", "--kill", "all"], env=self._env, check=False, timeout=30)
            self._ready = False
