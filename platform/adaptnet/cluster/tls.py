"""The cluster's TLS: one CA (made once, locally, like Ray's token) and a key and certificate per node for its
addresses, signed by that CA. Ray's gRPC (RAY_USE_TLS) and the head's MLflow server (HTTPS) use the node's
pair; every client verifies against the CA (RAY_TLS_CA_CERT, MLFLOW_TRACKING_SERVER_CERT_PATH).

  python -m adaptnet.cluster.tls ca ~/.adaptnet/tls                       # once, on your machine
  python -m adaptnet.cluster.tls node ~/.adaptnet/tls --ip 10.0.1.23      # on each node (aws.yaml does it)
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

CA_DAYS, NODE_DAYS = 3650, 825


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(folder: Path, name: str = "adaptnet cluster CA") -> Path:
    """ca.key (mode 600) and ca.crt in `folder`; an existing CA is kept. Returns ca.crt."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "ca.crt").exists():
        return folder / "ca.crt"
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now())
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(key, folder / "ca.key")
    (folder / "ca.crt").write_bytes(_cert_pem(cert))
    return folder / "ca.crt"


def make_node_cert(folder: Path, ips: list[str], names: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
    """node.key and node.crt in `folder` for these addresses (and 127.0.0.1), signed by the CA there; usable
    by servers and clients alike (Ray's TLS is mutual). Returns (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    addresses = list(dict.fromkeys([*ips, "127.0.0.1"]))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now()).not_valid_after(_now() + datetime.timedelta(days=NODE_DAYS))
            .add_extension(x509.SubjectAlternativeName([*(x509.DNSName(n) for n in names),
                                                        *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(key, folder / "node.key")
    (folder / "node.crt").write_bytes(_cert_pem(cert))
    return folder / "node.crt", folder / "node.key"


def ray_tls_env(folder: Path) -> dict[str, str]:
    """The environment that turns on Ray's mutual TLS with this node's pair."""
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": str(folder / "node.crt"),
            "RAY_TLS_SERVER_KEY": str(folder / "node.key"), "RAY_TLS_CA_CERT": str(folder / "ca.crt")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ca", "node"])
    p.add_argument("folder", type=Path)
    p.add_argument("--ip", action="append", default=[], help="an address of this node (repeat for several)")
    args = p.parse_args()
    if args.what == "ca":
        print(make_ca(args.folder))
    else:
        if not (args.folder / "ca.key").exists():
            print(f"tls: error: no CA in {args.folder} (python -m adaptnet.cluster.tls ca {args.folder})", file=sys.stderr)
            return 2
        print(make_node_cert(args.folder, args.ip)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
