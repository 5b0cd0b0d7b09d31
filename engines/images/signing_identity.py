"""The key that signs Content Credentials: a local certificate authority and a signing certificate it issued.

C2PA signs with an X.509 certificate chain; no public authority issues one
to a desktop app offline, so Atelier makes its own (the window a moment
after its first start, ``atelier image`` when it first signs; with
``cryptography``, in the front-end process): an EC P-256 CA and a leaf
issued by it (digitalSignature, EKU emailProtection, as C2PA wants). Validators therefore say ``signingCredential.untrusted``:
the signature proves the file was not changed since this Atelier signed
it, not who the user is. Nothing personal goes into the certificates; a
short random tag tells two installations apart.

Everything lives in one PEM file in the config folder (the CA's key and
certificate, the signer's key and certificate), written atomically and
readable by the user only (0600), under :func:`engines.storage.state_lock`
so a GUI and a CLI starting together agree on one identity. The CA's key is
kept so that an expired signer is renewed under the same CA (whoever chose
to trust it keeps trusting it). A file that cannot be read or does not hold
a matching set is set aside (never deleted), a new identity is made, and
:attr:`SigningIdentity.notice` says so in a sentence.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from engines.storage import atomic_write_bytes, set_aside, state_lock

IDENTITY_FILE = "content-credentials.pem"
VALID_DAYS = 3650
ORGANIZATION = "Atelier"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\s*", re.S)


@dataclass(frozen=True)
class SigningIdentity:
    """What signs: the signer's private key and its chain (signer first, then the CA), both PEM."""

    private_key_pem: bytes
    chain_pem: bytes
    path: Path
    notice: str = ""  # a sentence when the identity was just replaced (a damaged file), else ""


class DamagedIdentity(ValueError):
    """The identity file exists but does not hold a usable set; the message says what is wrong."""


def identity_file(config_dir: Path) -> Path:
    return Path(config_dir) / IDENTITY_FILE


def load_or_create_identity(config_dir: Path) -> SigningIdentity:
    """The profile's signing identity; made on first use, renewed when expired, replaced when damaged.

    Raises ``OSError`` only when the config folder cannot be written at all
    (the caller then saves the image without credentials and says why).
    """
    path = identity_file(config_dir)
    with state_lock(path):
        notice = ""
        try:
            blocks = _read_blocks(path)
        except FileNotFoundError:
            blocks = None
        except (OSError, DamagedIdentity) as exc:
            blocks = None
            notice = _replaced(path, exc)
        if blocks is not None:
            try:
                return _identity(path, *_parse(blocks))
            except _Expired as expired:
                return _identity(path, *_renew(path, expired.ca_key, expired.ca_cert))
            except DamagedIdentity as exc:
                notice = _replaced(path, exc)
        ca_key, ca_cert = _new_ca()
        signer_key, signer_cert = _issue(ca_key, ca_cert)
        _write(path, ca_key, ca_cert, signer_key, signer_cert)
        return _identity(path, signer_key, signer_cert, ca_cert, notice=notice)


class _Expired(Exception):
    def __init__(self, ca_key, ca_cert) -> None:
        super().__init__("the signing certificate expired")
        self.ca_key, self.ca_cert = ca_key, ca_cert


def _replaced(path: Path, problem: BaseException) -> str:
    """Set the damaged file aside and say so (the images it signed stay valid: their chain is inside them)."""
    reason = getattr(problem, "strerror", None) or str(problem)
    try:
        aside = set_aside(path)
        where = f"it was set aside as {aside.name}"
    except OSError as exc:
        where = f"it could not be set aside ({exc.strerror or exc}) and is overwritten"
    return (f"The Content Credentials key ({path}) could not be used: {reason}; {where}, and a new key was made. "
            "Images signed before keep their credentials.")


def _read_blocks(path: Path) -> dict[str, list[bytes]]:
    data = path.read_bytes()
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # copied in from elsewhere with looser rights: the keys are secrets
    blocks: dict[str, list[bytes]] = {}
    for match in _PEM_BLOCK.finditer(data):
        blocks.setdefault(match.group(1).decode("ascii"), []).append(match.group(0))
    if not blocks:
        raise DamagedIdentity("it holds no PEM keys or certificates")
    return blocks


def _parse(blocks: dict[str, list[bytes]]):
    """(signer key, signer certificate, CA certificate) from the file's blocks, checked to belong together."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    keys, certs = blocks.get("PRIVATE KEY", []), blocks.get("CERTIFICATE", [])
    if len(keys) != 2 or len(certs) != 2:
        raise DamagedIdentity(f"it should hold 2 private keys and 2 certificates, not {len(keys)} and {len(certs)}")
    try:
        ca_key, signer_key = (load_pem_private_key(block, password=None) for block in keys)
        ca_cert, signer_cert = (x509.load_pem_x509_certificate(block) for block in certs)
    except (ValueError, TypeError) as exc:
        raise DamagedIdentity(f"a key or certificate in it is damaged ({exc})") from None
    if not (_same_key(ca_key, ca_cert) and _same_key(signer_key, signer_cert)):
        raise DamagedIdentity("its keys do not match its certificates")
    try:
        signer_cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise DamagedIdentity("its signing certificate was not issued by its certificate authority") from None
    now = _now()
    if ca_cert.not_valid_after_utc <= now:
        raise DamagedIdentity("its certificate authority expired")
    if signer_cert.not_valid_after_utc <= now:
        raise _Expired(ca_key, ca_cert)
    return signer_key, signer_cert, ca_cert


def _same_key(key, cert) -> bool:
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _renew(path: Path, ca_key, ca_cert):
    signer_key, signer_cert = _issue(ca_key, ca_cert)
    _write(path, ca_key, ca_cert, signer_key, signer_cert)
    return signer_key, signer_cert, ca_cert


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _new_ca():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"Atelier local CA {secrets.token_hex(3)}")
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(ca_key, ca_cert):
    """A signing certificate for C2PA, issued by the local CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    tag = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.rsplit(" ", 1)[-1]
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(_name(f"Atelier on this computer ({tag})"))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=VALID_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_usage(cert_sign: bool):
    from cryptography import x509

    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, ca_key, ca_cert, signer_key, signer_cert) -> None:
    """CA key, signer key, CA certificate, signer certificate: one file, atomic, 0600 from the start."""
    data = _key_pem(ca_key) + _key_pem(signer_key) + _cert_pem(ca_cert) + _cert_pem(signer_cert)
    atomic_write_bytes(path, data, mode=0o600)


def _identity(path: Path, signer_key, signer_cert, ca_cert, notice: str = "") -> SigningIdentity:
    return SigningIdentity(_key_pem(signer_key), _cert_pem(signer_cert) + _cert_pem(ca_cert), path, notice)
