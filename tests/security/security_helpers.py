"""A CA and a server certificate made with openssl, and the repo's ACL file rewritten for a
test topic prefix (deploy/mosquitto/acl, plus a second camera node)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import REPO_ROOT

DEPLOY_ACL = REPO_ROOT / "deploy" / "mosquitto" / "acl"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(d: Path, name: str = "ca") -> Pki:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (d / f"{name}{s}" for s in (".key", ".crt", "-server.key", "-server.csr",
                                                             "-server.crt"))  # fmt: skip
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", f"/CN=pipeline test {name}")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / f"{name}-san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return Pki(ca, cert, key)


def acl_for(prefix: str, path: Path) -> Path:
    """deploy/mosquitto/acl with ``vision/`` -> ``<prefix>/`` and a node-2 owning site-a/cam-3."""
    text = DEPLOY_ACL.read_text().replace("vision/", f"{prefix}/")
    text += (
        f"\nuser node-2\ntopic write {prefix}/site-a/cam-3/events\ntopic write {prefix}/site-a/cam-3/status\n"
        f"topic read {prefix}/site-a/cam-3/config\ntopic read {prefix}/site-a/cam-3/acks\n"
    )
    path.write_text(text)
    return path
