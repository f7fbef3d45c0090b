"""Payload encryption's settings: the keys REPLICANTE_CODEC_KEYS (a YAML file) or
REPLICANTE_CODEC_KEY name, read and checked, and who may use the codec server
(REPLICANTE_CODEC_SERVER_TOKENS). The codec itself, AES-GCM over these keys, is
worker/codec.py's.

Keys are never logged (every one read is remembered for the log masker) and never shown by
a repr; errors name key ids only. Like models, this module reads YAML with pyyaml.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from config.masking import remember
from models import SpecError

KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKENS_ENV = "REPLICANTE_CODEC_SERVER_TOKENS"
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class KeyMaterial:
    """The keys by id, and the id of the one that encrypts; its repr shows ids only."""

    active: str
    keys: Mapping[str, bytes] = field(repr=False)
    source: str
    """Where the keys came from, for error messages (never a value)."""

    @classmethod
    def checked(cls, active: str, keys: Mapping[str, bytes], source: str) -> KeyMaterial:
        """SpecError, naming `source` and a key id, for an id or a key AES-256 cannot take."""
        for key_id, key in keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise SpecError(f"{source}: key id {key_id!r}: use [A-Za-z0-9._-], 1-64 long")
            if len(key) != KEY_BYTES:
                raise SpecError(
                    f"{source}: key {key_id!r} is {len(key)} bytes, not {KEY_BYTES} (AES-256)"
                )
        if active not in keys:
            raise SpecError(f"{source}: active key {active!r} is not among the keys")
        return cls(active, dict(keys), source)

    @property
    def ids(self) -> list[str]:
        return sorted(self.keys)

    def __repr__(self) -> str:
        return f"KeyMaterial(active={self.active!r}, ids={self.ids!r}, source={self.source!r})"


def read_keys(keys_file: Path | None, single_key: str | None) -> KeyMaterial | None:
    """The keys `REPLICANTE_CODEC_KEYS=PATH` (a YAML file) or `REPLICANTE_CODEC_KEY=ID:BASE64`
    name; None when neither is set: no encryption.

    >>> read_keys(None, "k1:" + "QUFB" * 10 + "QUE=")
    KeyMaterial(active='k1', ids=['k1'], source='REPLICANTE_CODEC_KEY')
    >>> read_keys(None, "k1:c2VjcmV0")
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
        return KeyMaterial.checked(key_id, {key_id: _decoded(source, key_id, encoded)}, source)
    if keys_file is not None:
        return _read_keys_file(keys_file)
    return None


def _read_keys_file(path: Path) -> KeyMaterial:
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
    return KeyMaterial.checked(active, decoded, source)


def _decoded(source: str, key_id: str, encoded: str) -> bytes:
    # Masked in this process's logs, however the key was given.
    remember(encoded.strip())
    try:
        return b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise SpecError(f"{source}: key {key_id!r} is not base64") from None


def load_tokens(value: str | None) -> frozenset[str]:
    """The tokens `REPLICANTE_CODEC_SERVER_TOKENS` names: a file (a value with a `/`), one
    token a line, blank lines and `#` comments skipped; else a comma list.

    A short token is refused: it is guessable, or a file name missing its `./`, which would
    otherwise become a token anyone can read in the environment.

    >>> sorted(load_tokens("0123456789abcdef, fedcba9876543210"))
    ['0123456789abcdef', 'fedcba9876543210']
    >>> load_tokens("tokens.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    models.spec.SpecError: REPLICANTE_CODEC_SERVER_TOKENS: a token is shorter than 16 ...
    """
    if not value:
        raise SpecError(f"{TOKENS_ENV} is not set: nobody could decode; set a file or a list")
    if "/" in value:
        try:
            lines = Path(value).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise SpecError(f"{TOKENS_ENV}={value}: cannot read: {error.strerror}") from None
        tokens = [t for line in lines if (t := line.strip()) and not t.startswith("#")]
        where = f"{TOKENS_ENV}={value}"
    else:
        tokens = [t for part in value.split(",") if (t := part.strip())]
        where = TOKENS_ENV
    if not tokens:
        raise SpecError(f"{where}: no token")
    if any(len(t) < MIN_TOKEN_LENGTH for t in tokens):
        raise SpecError(
            f"{where}: a token is shorter than {MIN_TOKEN_LENGTH} characters"
            " (name a file by a path with a /)"
        )
    for token in tokens:
        remember(token)
    return frozenset(tokens)
