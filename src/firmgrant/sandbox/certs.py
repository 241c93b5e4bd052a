"""The sandbox's key material: a TLS certificate for 127.0.0.1 and the connected app's key."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmgrant.timeutil import utcnow


def _write_private(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _self_signed(key: rsa.RSAPrivateKey, common_name: str, *, server: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        # A trust anchor for the client's CA bundle, and the server's own certificate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(key, hashes.SHA256())


def ensure_material(state: Path) -> None:
    """Create ``tls.key``/``tls.crt`` and ``jwt.key``/``jwt.crt`` in ``state`` unless present."""
    state.mkdir(parents=True, exist_ok=True)
    for stem, common_name, server in (
        ("tls", "firmgrant sandbox", True),
        ("jwt", "firmgrant connected app", False),
    ):
        key_path, cert_path = state / f"{stem}.key", state / f"{stem}.crt"
        if key_path.exists() and cert_path.exists():
            continue
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(key_path, key)
        cert = _self_signed(key, common_name, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def public_key_pem(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
