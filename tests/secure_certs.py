"""Test certificates, made with the `openssl` command at test time: a CA and the server and
client certificates it signs. Nothing here is ever committed; the keys live in pytest's tmp
dir for one session."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = "2"
# P-256 keys take milliseconds to make (RSA 2048 takes ~100 ms each) and every client and
# server here speaks them: rustls (Temporal's Rust core), Python's ssl and Java's JSSE.
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    @property
    def combined(self) -> Path:
        """Certificate and key in one PEM file, as pymongo's tlsCertificateKeyFile wants."""
        both = self.cert.with_suffix(".both.pem")
        if not both.exists():
            both.write_text(self.cert.read_text() + self.key.read_text())
        return both


def _openssl(*args: str | Path) -> None:
    run = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {run.stderr.strip()}")


@dataclass(frozen=True)
class TestCa:
    """A certificate authority in `dir`; issues leaf certificates signed by it."""

    __test__ = False  # not a test class, despite its name
    dir: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.dir / f"{self.name}.pem"

    @property
    def _key(self) -> Path:
        return self.dir / f"{self.name}.key"

    @classmethod
    def create(cls, dir: Path, name: str) -> TestCa:
        if shutil.which("openssl") is None:
            pytest.fail("no `openssl` command to make test certificates: apt-get install openssl")
        ca = cls(dir, name)
        _openssl(
            "req", "-x509", *KEY, "-days", DAYS, "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", ca._key, "-out", ca.cert,
        )  # fmt: skip
        return ca

    def issue(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Issued:
        """A certificate for `name` valid for server and client use on `hosts` (DNS names
        or IP addresses)."""
        issued = Issued(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        csr, extensions = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
        sans = ",".join(
            f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
        )
        extensions.write_text(
            f"subjectAltName={sans}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl("req", "-new", *KEY, "-subj", f"/CN={name}", "-keyout", issued.key, "-out", csr)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self._key,
            "-CAcreateserial", "-days", DAYS, "-extfile", extensions, "-out", issued.cert,
        )  # fmt: skip
        return issued
