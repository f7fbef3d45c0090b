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

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from config.codec import KeyMaterial, read_keys
from models import SpecError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecKeyError(SpecError):
    """A payload this process cannot decrypt: its key id is not held, or the key held under
    that id is not the one that encrypted it. One line, naming the key id."""


class CodecKeys:
    """The keys by id as ciphers, and the id of the one that encrypts. Its repr shows ids
    only."""

    __slots__ = ("_keys", "active", "source")

    def __init__(self, material: KeyMaterial) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.active = material.active
        self.source = material.source
        self._keys = {key_id: AESGCM(key) for key_id, key in material.keys.items()}

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
    """The keys the settings name (config/codec.py `read_keys`), as ciphers; None when
    neither is set: no encryption.

    >>> load_keys(None, "k1:" + "QUFB" * 10 + "QUE=")
    CodecKeys(active='k1', ids=['k1'], source='REPLICANTE_CODEC_KEY')
    """
    material = read_keys(keys_file, single_key)
    return None if material is None else CodecKeys(material)


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
