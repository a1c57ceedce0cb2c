"""X.509 key pairs that sign the dm-verity root hash of extension DDIs.

systemd-sysext trusts a signed DDI only if the PKCS#7 signature in its verity-sig partition
was made by a certificate it knows (``/etc/verity.d/*.crt`` or the kernel keyring), so a
run needs one key pair whose certificate goes into the guest. By default the pair is made
per run (RSA 2048, self-signed, never leaves the host); ``$SYSEXT_HARNESS_SIGNING_KEY`` and
``$SYSEXT_HARNESS_SIGNING_CERT`` name a user's own pair instead, for example the one an OS
vendor really ships. A second, "untrusted" pair signs images the guest must refuse.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from harness.errors import ConfigError

KEY_ENV = "SYSEXT_HARNESS_SIGNING_KEY"
CERT_ENV = "SYSEXT_HARNESS_SIGNING_CERT"
TRUSTED_NAME = "verity-signing"
UNTRUSTED_NAME = "verity-untrusted"
KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"

_KEY_ALLOWED = "a PEM (or DER) RSA or EC private key file without a passphrase"
_CERT_ALLOWED = "a PEM (or DER) X.509 certificate file"
_BOTH_ALLOWED = (
    f"set both {KEY_ENV} (private key) and {CERT_ENV} (its certificate), "
    "or neither (a key pair is generated per run)"
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class VerityKeyPair:
    """A private key and its certificate, as files systemd-repart can read."""

    key: Path
    certificate: Path
    fingerprint: str  # sha256 of the certificate's DER, lower-case hex (what repart records)
    origin: str  # "generated" or "environment"

    def certificate_pem(self) -> bytes:
        """The certificate in PEM, the form /etc/verity.d/*.crt must have."""
        return certificate_pem(self.certificate)


# --------------------------------------------------------------------------- loading


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate; ValueError if it is neither."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def certificate_pem(path: Path) -> bytes:
    """A PEM or DER certificate file as PEM, the form /etc/verity.d/*.crt must have."""
    return load_certificate(path).public_bytes(serialization.Encoding.PEM)


def load_private_key(path: Path) -> PrivateKey:
    """A PEM or DER RSA/EC key without passphrase; ValueError or TypeError otherwise."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(data, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"a {type(key).__name__} cannot make PKCS#7 verity signatures")
    return key


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """sha256 over the DER certificate: the ``certificateFingerprint`` repart writes."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- generating


def _new_pair(common_name: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM): RSA 2048 self-signed, shaped like `openssl req -x509`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sysext-harness"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    # Backdated a day, so a guest whose clock lags the host still sees a valid certificate.
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _pair_in(directory: Path, origin: str) -> VerityKeyPair:
    cert = load_certificate(directory / CERT_FILE)
    return VerityKeyPair(
        key=directory / KEY_FILE,
        certificate=directory / CERT_FILE,
        fingerprint=certificate_fingerprint(cert),
        origin=origin,
    )


def generate_key_pair(directory: Path, name: str = TRUSTED_NAME) -> VerityKeyPair:
    """The pair in ``directory/name/`` (key 0600, directory 0700), made on first use.

    Several processes (pytest-xdist workers) may ask at once: the pair is written into a
    temporary directory that is renamed into place, so everyone ends up with one pair.
    """
    final = directory / name
    if (final / CERT_FILE).exists():
        return _pair_in(final, "generated")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))  # mode 0700
    try:
        key_pem, cert_pem = _new_pair(f"sysext-harness {name} {os.getpid()}")
        fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        (tmp / CERT_FILE).write_bytes(cert_pem)
        os.chmod(tmp / CERT_FILE, 0o644)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / CERT_FILE).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _pair_in(final, "generated")


def untrusted_key_pair(directory: Path) -> VerityKeyPair:
    """A second generated pair, never the user's: signs images the guest must refuse."""
    return generate_key_pair(directory, UNTRUSTED_NAME)


# --------------------------------------------------------------------------- environment


def key_pair_from_env(environ: Mapping[str, str] | None = None) -> VerityKeyPair | None:
    """The user's pair from $SYSEXT_HARNESS_SIGNING_KEY/_CERT, None if neither is set.

    Raises ConfigError naming the variable when a file is missing or unreadable, is not a
    key or certificate, or the key does not belong to the certificate.
    """
    env = os.environ if environ is None else environ
    key_value = env.get(KEY_ENV, "")
    cert_value = env.get(CERT_ENV, "")
    if not key_value and not cert_value:
        return None
    if not key_value or not cert_value:
        missing, given = (KEY_ENV, CERT_ENV) if not key_value else (CERT_ENV, KEY_ENV)
        raise ConfigError(f"{given} is set but {missing} is not", key=missing,
                          value=None, allowed=_BOTH_ALLOWED)

    key_path, cert_path = Path(key_value), Path(cert_value)
    for var, path, allowed in ((KEY_ENV, key_path, _KEY_ALLOWED),
                               (CERT_ENV, cert_path, _CERT_ALLOWED)):
        if not path.is_file():
            raise ConfigError("no such file", key=var, value=str(path), allowed=allowed)
        if not os.access(path, os.R_OK):
            raise ConfigError("file is not readable", key=var, value=str(path),
                              allowed=allowed)
    try:
        cert = load_certificate(cert_path)
    except ValueError as exc:
        raise ConfigError(f"not an X.509 certificate ({exc})", key=CERT_ENV,
                          value=str(cert_path), allowed=_CERT_ALLOWED) from None
    try:
        key = load_private_key(key_path)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a usable private key ({exc})", key=KEY_ENV,
                          value=str(key_path), allowed=_KEY_ALLOWED) from None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(
            f"the private key does not belong to the certificate in {CERT_ENV}",
            key=KEY_ENV, value=str(key_path),
            allowed=f"the private key of the certificate {cert_path}",
        )
    return VerityKeyPair(key=key_path, certificate=cert_path,
                         fingerprint=certificate_fingerprint(cert), origin="environment")


def signing_key_pair(directory: Path, environ: Mapping[str, str] | None = None) -> VerityKeyPair:
    """The run's trusted pair: the user's from the environment, else one generated (once)
    in ``directory`` (typically the run directory)."""
    return key_pair_from_env(environ) or generate_key_pair(directory, TRUSTED_NAME)


def write_pem_copies(pair: VerityKeyPair, directory: Path) -> tuple[Path, Path]:
    """PEM copies of key (0600) and certificate in `directory`, for tools that want PEM
    (systemd-repart) whatever form the user's files have."""
    key = load_private_key(pair.key)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    with contextlib.suppress(FileNotFoundError):
        key_path.unlink()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(pair.certificate_pem())
    return key_path, cert_path


@dataclass(frozen=True)
class VerityKeys:
    """The run's two pairs: `trusted` (its certificate goes into the guest's /etc/verity.d)
    and `untrusted` (never installed: images signed with it must be refused)."""

    trusted: VerityKeyPair
    untrusted: VerityKeyPair

    def for_ddi(self, ddi: str) -> VerityKeyPair | None:
        """The pair a spec's ``ddi:`` value signs with: signed -> trusted, untrusted ->
        untrusted, anything else (unsigned, plain) -> None."""
        return {"signed": self.trusted, "untrusted": self.untrusted}.get(ddi)


def run_keys(directory: Path, environ: Mapping[str, str] | None = None) -> VerityKeys:
    """Both pairs of a run, in (or, for the user's own pair, named from) `directory`."""
    return VerityKeys(trusted=signing_key_pair(directory, environ),
                      untrusted=untrusted_key_pair(directory))
