"""Payload encryption: AES-256-GCM over every payload our processes hand to Temporal, so
that the server (its database, its UI without a codec server, anyone reading history over
gRPC) holds specs, views and plans only as ciphertext.

The SDK's extension point does the work (a `PayloadCodec` in the data converter, as in
temporalio/samples-python `encryption/`); here are the keys. Each is named by an id, and
every encrypted payload carries the id of the key that encrypted it in its metadata: new
payloads use the `active` key, and a payload is decrypted with the key its id names, so
histories written before a rotation stay readable for as long as their key stays listed.

Not encrypted, by Temporal's design: search attributes (the server indexes them: the
monitor's cluster id, kind, health and findings count), workflow and activity ids and
types, task queue names, the SDK's patch markers (patch ids), and failure messages.
Payloads without our encoding (histories from before encryption was turned on) pass
through decoding unchanged.

A process without keys gets `KeylessCodec`: its payloads go in clear as before, and an
encrypted one it meets fails in one line naming the missing setting.

Keys are never logged and never shown by a repr; errors name key ids only. cryptography is
imported where keys are loaded: a process without keys does not pay for it.
"""

from __future__ import annotations

import binascii
import os
import re
from base64 import b64decode
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from config.secrets import remember
from models import SpecError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CodecKeyError(SpecError):
    """A payload this process cannot decrypt: its key id is not held, or the key held under
    that id is not the one that encrypted it. One line, naming the key id."""


class CodecKeys:
    """The keys by id, and the id of the one that encrypts. Its repr shows ids only."""

    __slots__ = ("_keys", "active", "source")

    def __init__(self, active: str, keys: Mapping[str, bytes], source: str) -> None:
        """`source` says where the keys came from, for error messages (never a value)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for key_id, key in keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise SpecError(f"{source}: key id {key_id!r}: use [A-Za-z0-9._-], 1-64 long")
            if len(key) != KEY_BYTES:
                raise SpecError(
                    f"{source}: key {key_id!r} is {len(key)} bytes, not {KEY_BYTES} (AES-256)"
                )
        if active not in keys:
            raise SpecError(f"{source}: active key {active!r} is not among the keys")
        self.active = active
        self.source = source
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def cipher(self, key_id: str) -> AESGCM:
        try:
            return self._keys[key_id]
        except KeyError:
            raise CodecKeyError(
                f"payload encrypted with codec key {key_id!r}, which {self.source} does not"
                f" hold (it holds {', '.join(self.ids)}): put that key back among the keys"
            ) from None

    def __repr__(self) -> str:
        return f"CodecKeys(active={self.active!r}, ids={self.ids!r}, source={self.source!r})"


def load_keys(keys_file: Path | None, single_key: str | None) -> CodecKeys | None:
    """The keys `REPLICANTE_CODEC_KEYS=PATH` (a YAML file) or `REPLICANTE_CODEC_KEY=ID:BASE64`
    name; None when neither is set: no encryption.

    >>> load_keys(None, "k1:" + "QUFB" * 10 + "QUE=")
    CodecKeys(active='k1', ids=['k1'], source='REPLICANTE_CODEC_KEY')
    >>> load_keys(None, "k1:c2VjcmV0")
    Traceback (most recent call last):
    ...
    models.spec.SpecError: REPLICANTE_CODEC_KEY: key 'k1' is 6 bytes, not 32 (AES-256)
    """
    if keys_file is not None and single_key is not None:
        raise SpecError("set one of REPLICANTE_CODEC_KEYS (a keys file) and REPLICANTE_CODEC_KEY")
    if single_key is not None:
        source = "REPLICANTE_CODEC_KEY"
        key_id, colon, encoded = single_key.partition(":")
        if not colon:
            raise SpecError(f"{source}: give KEY_ID:BASE64 (32 random bytes, base64)")
        return CodecKeys(key_id, {key_id: _decoded(source, key_id, encoded)}, source)
    if keys_file is not None:
        return _read_keys_file(keys_file)
    return None


def _read_keys_file(path: Path) -> CodecKeys:
    source = f"REPLICANTE_CODEC_KEYS={path}"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SpecError(f"{source}: cannot read: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        # Not the parser's message: it quotes the offending text, which may be a key.
        raise SpecError(f"{source}: not a YAML file") from None
    layout = "want `active: KEY_ID` and `keys: {KEY_ID: BASE64, ...}`"
    if not isinstance(loaded, dict) or set(loaded) != {"active", "keys"}:
        raise SpecError(f"{source}: {layout}")
    active, keys = loaded["active"], loaded["keys"]
    if not isinstance(active, str) or not isinstance(keys, dict) or not keys:
        raise SpecError(f"{source}: {layout}")
    decoded = {}
    for key_id, encoded in keys.items():
        if not isinstance(key_id, str) or not isinstance(encoded, str):
            raise SpecError(f"{source}: keys: {layout}")
        decoded[key_id] = _decoded(source, key_id, encoded)
    return CodecKeys(active, decoded, source)


def _decoded(source: str, key_id: str, encoded: str) -> bytes:
    # Masked in this process's logs, however the key was given.
    remember(encoded.strip())
    try:
        return b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise SpecError(f"{source}: key {key_id!r} is not base64") from None


class EncryptionCodec(PayloadCodec):
    """Each payload becomes one `binary/encrypted` payload: a fresh 96-bit nonce, then the
    AES-GCM ciphertext of the whole serialized payload (metadata included: a spec's
    `json/plain` encoding and message type are hidden too)."""

    def __init__(self, keys: CodecKeys) -> None:
        self.keys = keys

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys.cipher(self.keys.active).encrypt(
            nonce, payload.SerializeToString(), None
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.keys.active.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        from cryptography.exceptions import InvalidTag

        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self.keys.cipher(key_id)
        try:
            opened = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise CodecKeyError(
                f"payload encrypted with codec key {key_id!r} does not decrypt with the key"
                f" {self.keys.source} holds under that id: another key, or a damaged payload"
            ) from None
        return Payload.FromString(opened)

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]


class KeylessCodec(PayloadCodec):
    """The codec of a process without keys: its payloads go in clear, and an encrypted one
    fails in one line saying what is missing (the payload converter would say only
    "Unknown payload encoding")."""

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        decoded = list(payloads)
        for payload in decoded:
            if payload.metadata.get("encoding") == ENCODING:
                key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
                raise CodecKeyError(
                    f"payload encrypted with codec key {key_id!r}, and this process holds no"
                    " codec keys: set REPLICANTE_CODEC_KEYS or REPLICANTE_CODEC_KEY"
                )
        return decoded


def payload_codec(keys_file: Path | None, single_key: str | None) -> PayloadCodec:
    """The codec of a process with these settings (see `load_keys`)."""
    keys = load_keys(keys_file, single_key)
    return KeylessCodec() if keys is None else EncryptionCodec(keys)
