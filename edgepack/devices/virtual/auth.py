"""adb's RSA authentication, device side: what adbd does when ro.adb.secure=1.

After the host's CNXN the device sends AUTH(TOKEN, 0, 20 random bytes) instead of its own CNXN.
The host signs the token with each private key it holds (adb: RSA_sign(NID_sha1, token), i.e.
PKCS#1 v1.5 over the 20 bytes taken as if they were a SHA-1 digest) and answers
AUTH(SIGNATURE, 0, sig). adbd checks the signature with RSA_verify(NID_sha1, token, ...) against
every key it accepts: on a match it sends its CNXN and the transport is online; otherwise it
sends a fresh token, and the host tries its next key. Out of keys, the host sends
AUTH(RSAPUBLICKEY, 0, "<base64 key> user@host\\0"); adbd would ask the person holding the phone,
and with nobody to ask it never answers, so the host lists the device `unauthorized`. We do the
same: a key is accepted only from a key file, never from the wire.

Key files use adbd's adb_keys format: one key per line, the base64 of android_pubkey's struct
(modulus size in 32-bit words, n0inv, modulus little-endian, R^2 little-endian, exponent; 524
bytes for RSA-2048), optionally followed by a space or tab and a comment such as `user@host`.
Debian's adb server writes the user's key that way to ~/.android/adbkey.pub. The files are read
again at each verification, as adbd does, so a key added to a file counts from the next attempt.

The RSA arithmetic is the `cryptography` package's, imported only when authentication is on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger("edgepack.virtual_device")

# AUTH's arg0 (adb_auth.h).
AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

TOKEN_SIZE = 20  # adb's TOKEN_SIZE: a SHA-1 digest's length, which RSA_verify(NID_sha1) demands
# adbd slows a client down once it has failed this many times on one connection.
FAILURES_BEFORE_DELAY = 256

MODULUS_SIZE = 2048 // 8
_PUBKEY = struct.Struct(f"<II{MODULUS_SIZE}s{MODULUS_SIZE}sI")
ENCODED_SIZE = _PUBKEY.size  # 524: ANDROID_PUBKEY_ENCODED_SIZE


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class AdbPublicKey:
    blob: bytes  # the decoded 524-byte struct, as on the line
    modulus: int
    exponent: int
    comment: str  # what followed the key on its line, e.g. user@host
    origin: str  # FILE:LINE, for logs

    @property
    def fingerprint(self) -> str:
        """MD5 of the key blob in colon-separated hex: what Android's "Allow USB debugging?"
        dialog shows, so a user can match a log line with a phone's prompt."""
        digest = hashlib.md5(self.blob, usedforsecurity=False).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    def verify(self, token: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        if len(token) != TOKEN_SIZE:
            return False
        try:
            _public_key(self.modulus, self.exponent).verify(
                signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_key_line(line: str, origin: str) -> AdbPublicKey:
    """One adb_keys line; KeyFileError when it is not an adb RSA public key."""
    text = line.strip()
    # adbd cuts the line at the first space or tab: what follows is a comment.
    cut = min((i for i in (text.find(" "), text.find("\t")) if i >= 0), default=len(text))
    encoded, comment = text[:cut], text[cut:].strip()
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{origin}: not base64 (expected an adb public key, as in "
                           "~/.android/adbkey.pub)") from None
    if len(blob) != ENCODED_SIZE:
        raise KeyFileError(f"{origin}: {len(blob)} bytes, not an adb RSA-2048 public key "
                           f"({ENCODED_SIZE} bytes, as in ~/.android/adbkey.pub)")
    words, _n0inv, modulus_le, _rr, exponent = _PUBKEY.unpack(blob)
    if words != MODULUS_SIZE // 4:
        raise KeyFileError(f"{origin}: modulus of {words} words, expected {MODULUS_SIZE // 4}")
    modulus = int.from_bytes(modulus_le, "little")
    try:
        _public_key(modulus, exponent)
    except ValueError as exc:
        raise KeyFileError(f"{origin}: not a usable RSA key ({exc})") from None
    return AdbPublicKey(blob=blob, modulus=modulus, exponent=exponent, comment=comment,
                        origin=origin)


def encode_public_key(key: RSAPublicKey, comment: str = "") -> str:
    """`key` as an adb_keys line (android_pubkey_encode + base64, then the comment)."""
    numbers = key.public_numbers()
    n = numbers.n
    if n.bit_length() > MODULUS_SIZE * 8:
        raise ValueError(f"adb keys are RSA-{MODULUS_SIZE * 8}; this one has "
                         f"{n.bit_length()} bits")
    r32 = 1 << 32
    n0inv = (r32 - pow(n % r32, -1, r32)) % r32  # -1 / n[0] mod 2^32
    rr = pow(2, MODULUS_SIZE * 8 * 2, n)  # (2^2048)^2 mod n, Montgomery's R^2
    blob = _PUBKEY.pack(MODULUS_SIZE // 4, n0inv, n.to_bytes(MODULUS_SIZE, "little"),
                        rr.to_bytes(MODULUS_SIZE, "little"), numbers.e)
    line = base64.b64encode(blob).decode("ascii")
    return f"{line} {comment}" if comment else line


def read_key_file(path: Path, strict: bool) -> list[AdbPublicKey]:
    """The keys in one adb_keys file. strict: a line that is not a key, or a missing file, is a
    KeyFileError (a file the user named); otherwise such lines are skipped with a log line, as
    adbd skips them."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        if strict:
            raise KeyFileError(f"{path}: no such file") from None
        return []
    except OSError as exc:
        if strict:
            raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
        log.warning("cannot read the key file %s: %s", path, exc.strerror or exc)
        return []
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            keys.append(parse_key_line(line, f"{path}:{number}"))
        except KeyFileError as exc:
            if strict:
                raise
            log.warning("skipping %s", exc)
    return keys


@dataclass(frozen=True)
class KeySource:
    path: Path
    required: bool  # named by the user: must exist and hold only keys


class Authenticator:
    """The keys a device accepts and the checks adbd makes with them."""

    def __init__(self, sources: tuple[KeySource, ...]) -> None:
        self.sources = sources

    def check(self) -> int:
        """Read every source as a start-up check: KeyFileError for a required file that is
        missing or holds something else than keys; the number of keys accepted."""
        return len({key.blob for source in self.sources
                    for key in read_key_file(source.path, strict=source.required)})

    def keys(self) -> list[AdbPublicKey]:
        return [key for source in self.sources
                for key in read_key_file(source.path, strict=False)]

    def verify(self, token: bytes, signature: bytes) -> AdbPublicKey | None:
        """The accepted key that made `signature` over `token`, or None."""
        for key in self.keys():
            if key.verify(token, signature):
                return key
        return None

    def describe(self) -> str:
        return ", ".join(str(source.path) for source in self.sources)


def new_token() -> bytes:
    return secrets.token_bytes(TOKEN_SIZE)


def _public_key(modulus: int, exponent: int) -> RSAPublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.RSAPublicNumbers(exponent, modulus).public_key()
