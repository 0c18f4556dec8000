#!/usr/bin/env python3
"""Reproduces docs/protocols/vectors/pads.json from pads.md's formats alone, with Python's
hashlib and pyca/cryptography (ChaCha20, Poly1305): `python3 pads_check.py` prints `ok`.
Not run by CI (the machine's Python may lack `cryptography`); run it when a format changes."""
import hashlib, json, os, struct, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.poly1305 import Poly1305

v = json.load(open(os.path.join(os.path.dirname(__file__), "pads.json")))
H = lambda b: hashlib.sha256(b).digest()
size = v["pad_size"]
seed = bytes.fromhex(v["pad_seed"])
# ChaCha20 of RFC 8439, nonce 12 zero bytes, counter from 0 (cryptography's 16-byte nonce is
# the counter, little-endian, then the nonce).
pad = Cipher(algorithms.ChaCha20(seed, bytes(16)), None).encryptor().update(bytes(size))
pad_id = bytes.fromhex(v["pad_id"][4:])
assert pad_id == b"vector pad id 01"

# The pad file (session-key mode) and the one-time file's digest.
url = b"https://pads.example"
head = (b"TALLYPAD" + bytes([1]) + b"%c" + pad_id + struct.pack(">Q", size) + b"EUR"
        + struct.pack(">q", 500) + bytes([0xAB]) * 32 + bytes([len(url)]) + url)
f2 = head.replace(b"%c", bytes([2]), 1) + seed
assert (f2 + H(f2)).hex() == v["file_session_key"], "session-key file"
f1 = head.replace(b"%c", bytes([1]), 1) + pad
assert H(f1 + H(f1)).hex() == v["file_one_time_sha256"], "one-time file"

# The mailbox address.
assert "mbx-" + H(b"tally/pad-mailbox/v1\0" + pad[:32])[:16].hex() == v["mailbox"]

def seal(direction, offset, plain):
    n = len(plain)
    body = b"TPAD" + bytes([1, direction]) + pad_id + struct.pack(">QI", offset, n)
    body += bytes(a ^ b for a, b in zip(plain, pad[offset:offset + n]))
    return body + Poly1305.generate_tag(pad[offset + n:offset + n + 32], body)

def padded(b, n=256):
    return b + bytes(n - len(b))

# show up at 64; its reply at the top of the pad, answering offset 64.
show = padded(bytes([0x01]))
assert seal(1, 64, show).hex() == v["show_up_frame"], "show up"
fwd_plain = padded(bytes([0x02, 7]) + b"weather" + bytes([0]) + struct.pack(">I", 17) + b"tomorrow in Bern?")
assert seal(1, 64 + 288, fwd_plain).hex() == v["forward_up_frame"], "forward up"

# Records: line = up_offset, up_len, SHA-256(up frame), outcome, down_offset, down_len, debit.
r0 = H(b"tally/pad-record/v1\0" + pad_id)
assert r0.hex() == v["record_0"]
line1 = struct.pack(">QI", 64, 256) + H(seal(1, 64, show)) + bytes([0]) + struct.pack(">QIq", size - 288, 256, 0)
assert line1.hex() == v["record_line_1"], "line 1"
r1 = H(b"tally/pad-record/v1\0" + r0 + line1)
assert r1.hex() == v["record_1"]
# 288 + 288 charged bytes at 2 minor units per KiB: 1, and the provider's price of 40.
line2 = struct.pack(">QI", 352, 256) + H(seal(1, 352, fwd_plain)) + bytes([0]) + struct.pack(">QIq", size - 576, 256, 41)
assert line2.hex() == v["record_line_2"], "line 2"
r2 = H(b"tally/pad-record/v1\0" + r1 + line2)
assert r2.hex() == v["record_2"]

# show's reply (debit 0): state 1 (active), value 500, EUR, up_next 352, down_low 3808, 1 record, record_1.
shown = (struct.pack(">Qq", 64, 0) + bytes([0x01, 1]) + struct.pack(">q", 500) + b"EUR"
         + struct.pack(">QQQ", 352, size - 288, 1) + r1)
assert seal(2, size - 288, padded(shown)).hex() == v["show_down_frame"], "show down"
# forward's reply (debit 41): the request id the node picked (0x11 × 16).
fwd_reply = struct.pack(">Qq", 352, 41) + bytes([0x02]) + bytes([0x11]) * 16
assert seal(2, size - 576, padded(fwd_reply)).hex() == v["forward_down_frame"], "forward down"

# The voucher code: 125 bits, Crockford base32, check symbol mod 37.
x = int.from_bytes(bytes.fromhex(v["voucher_random"]), "big") >> 3
A = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
syms = "".join(A[(x >> (5 * (24 - i))) & 31] for i in range(25))
check = (A + "*~$=U")[x % 37]
assert "-".join([syms[i:i + 5] for i in range(0, 25, 5)] + [check]) == v["voucher_code"]
# The transfer receipt: Ed25519 (seed 03 × 32) over "tally/pad-transfer/v1" 0x00 ‖ the RFC 8785
# JSON of {pad, from, to, value, up_next, down_low, at}; the signer is SHA-256 of the key.
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
r = v["transfer_receipt"]
body = {"at": 1796601600000000, "down_low": 3520, "from": "pa-" + "01" * 16, "pad": v["pad_id"],
        "to": "pa-" + "02" * 16, "up_next": 640, "value": {"currency": "EUR", "minor": 459}}
assert r["bytes"] == json.dumps(body, sort_keys=True, separators=(",", ":")), "canonical bytes"
sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["transfer_node_seed"]))
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
sk.public_key().verify(bytes.fromhex(r["signature"]), b"tally/pad-transfer/v1\0" + r["bytes"].encode())
assert H(pk).hex() == r["signer"], "signer"
# The pad's key pair: an Ed25519 seed of SHA-256("tally/pad-key/v1" 0x00 ‖ pad[32..64]); its
# key address; its alias claim over "tally/pad-alias/v1" 0x00 ‖ key ‖ mailbox ‖ at (i64 BE).
pk_sk = Ed25519PrivateKey.from_private_bytes(H(b"tally/pad-key/v1\0" + pad[32:64]))
pad_pk = pk_sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
assert "pk-" + pad_pk.hex() == v["pad_public_key"], "pad key"
assert "mbx-" + H(b"tally/pad-mailbox-key/v1\0" + pad_pk)[:16].hex() == v["pad_key_address"]
claim = pad_pk + bytes.fromhex(v["mailbox"][4:]) + struct.pack(">q", v["alias_claim_at"])
assert pk_sk.sign(b"tally/pad-alias/v1\0" + claim).hex() == v["alias_claim_signature"], "claim"
print("ok")
