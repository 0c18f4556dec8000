#!/usr/bin/env python3
"""Re-checks the version 2 and version 3 locked-delivery vectors outside Rust.

    python3 docs/protocols/vectors/check_delivery_v2.py docs/protocols/vectors/delivery_v2.json
    python3 docs/protocols/vectors/check_delivery_v2.py docs/protocols/vectors/delivery_v3.json

Written from docs/protocols/delivery.md and docs/protocols/crypto.md alone: parses the package
(magic, version 2 or 3, canonical JSON header), checks every entry's length and the hash over
its sealed bytes (SHA-256 in version 2; BLAKE3 in version 3, computed by Debian's `b3sum`), the trailer's digest and the node's Ed25519 signature over it, unwraps the
content key with the unlock key and decrypts the product's TALLYSTR stream (XChaCha20-Poly1305
built from HChaCha20 and the IETF ChaCha20-Poly1305 of the `cryptography` package), and
compares it with the vector's product. Exits 1 on the first disagreement.
"""

import hashlib
import json
import struct
import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SIGNATURE_DOMAIN = b"tally/delivery-package/v1\0"
WRAP_AAD = b"tally/delivery-wrap/v1\0"
STREAM_INFO = b"tally/stream/v1"
TAG = 16


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def rotl(v, n):
    return ((v << n) & 0xFFFFFFFF) | (v >> (32 - n))


def hchacha20(key, nonce16):
    """HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the subkey of XChaCha20."""
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))

    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha_open(key, nonce24, ciphertext_and_tag, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).decrypt(b"\0\0\0\0" + nonce24[16:], ciphertext_and_tag, aad)


def blake3_hex(data):
    """BLAKE3 by Debian's b3sum (`apt-get install b3sum`), not by the Rust crate Tally uses."""
    out = subprocess.run(["b3sum", "--no-names"], input=data, capture_output=True, check=True)
    return out.stdout.decode().strip()


def canonical(value):
    # RFC 8785 for this header: strings, integers, objects, arrays (no floats).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def open_stream(content_key, sealed):
    header = sealed[:64]
    if header[:8] != b"TALLYSTR" or header[8] != 1:
        fail("entry is not a TALLYSTR version 1 stream")
    (chunk,) = struct.unpack(">I", header[9:13])
    salt, prefix = header[13:45], header[45:64]
    file_key = HKDF(algorithm=SHA256(), length=32, salt=salt, info=STREAM_INFO).derive(content_key)
    body, out, i = sealed[64:], b"", 0
    while True:
        piece = body[: chunk + TAG]
        body = body[chunk + TAG:]
        last = len(piece) < chunk + TAG
        nonce = prefix + struct.pack(">I", i) + (b"\1" if last else b"\0")
        out += xchacha_open(file_key, nonce, piece, header)
        i += 1
        if last:
            if body:
                fail("bytes after the stream's last chunk")
            return out


def main(path):
    v = json.load(open(path))
    pkg = bytes.fromhex(v["package_hex"])
    if pkg[:8] != b"TALLYPKG":
        fail("magic")
    version = pkg[8]
    if version not in (2, 3):
        fail(f"version byte {version}, expected 2 or 3")
    (hlen,) = struct.unpack(">I", pkg[9:13])
    header_json = pkg[13 : 13 + hlen]
    header = json.loads(header_json)
    if canonical(header) != header_json:
        fail("header is not canonical JSON")
    if header_json.decode() != v["header_jcs"]:
        fail("header differs from header_jcs")
    if header["v"] != version:
        fail(f"header v is not {version}")
    at = 13 + hlen
    entries = []
    for e in header["entries"]:
        if "plain_sha256" in e:
            fail(f"entry {e['name']} lists plain_sha256 in a version {version} header")
        listed = "sealed_sha256" if version == 2 else "sealed_blake3"
        if set(e) & {"sealed_sha256", "sealed_blake3"} != {listed}:
            fail(f"entry {e['name']}: a version {version} header lists {listed} alone")
        sealed = pkg[at : at + e["sealed_len"]]
        digest = hashlib.sha256(sealed).hexdigest() if version == 2 else blake3_hex(sealed)
        if len(sealed) != e["sealed_len"] or digest != e[listed]:
            fail(f"entry {e['name']}: length or {listed}")
        entries.append(sealed)
        at += e["sealed_len"]
    trailer = pkg[at:]
    if len(trailer) != 8 + 32 + 64 or trailer[:8] != b"TALLYSIG":
        fail("trailer")
    digest = hashlib.sha256(pkg[: 13 + hlen]).digest()
    if trailer[8:40] != digest or digest.hex() != v["package_digest"]:
        fail("trailer digest")
    if header["node_key"] != v["node_public_key_hex"]:
        fail("node key")
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(header["node_key"])).verify(
        trailer[40:], SIGNATURE_DOMAIN + digest
    )
    wrap = bytes.fromhex(header["content_key_wrap"])
    content_key = xchacha_open(
        bytes.fromhex(v["unlock_key_hex"]),
        wrap[:24],
        wrap[24:],
        # The code's 21 characters, without the dashes the header shows.
        WRAP_AAD + header["reference"].replace("-", "").encode(),
    )
    plain = open_stream(content_key, entries[0])
    if plain != bytes.fromhex(v["product_hex"]) or len(plain) != header["entries"][0]["plain_len"]:
        fail("the decrypted product is not the vector's")
    for e, sealed in zip(header["entries"][1:], entries[1:]):
        if len(open_stream(content_key, sealed)) != e["plain_len"]:
            fail(f"entry {e['name']}: plain_len")
    print(f"python reader agrees with the version {version} package ({len(pkg)} bytes, {len(entries)} entries)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/protocols/vectors/delivery_v2.json")
