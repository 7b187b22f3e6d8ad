#!/usr/bin/env python3
"""Seed corpus for tests/fuzz/fuzz_wire.c: well-formed frames of every kind,
engine control messages of every type, and a few near misses. Run from tests/fuzz/; writes corpus/seed-*."""
import os, struct, zlib

def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff

def frame(t, payload):
    n = len(payload)
    check = (~((n & 0xffff) ^ (n >> 16) ^ t)) & 0xffff
    return struct.pack(">IBBH", n, t, 0, check) + payload

def page(index, epoch, flags, region, data):
    return frame(3, struct.pack(">QIHHII", index, epoch, flags, region, len(data),
                                crc32c(data) if data else 0) + data)

MAGIC, V = 0x544c4d57, 2
hello = struct.pack(">IHH", MAGIC, V, 0) + bytes(range(16)) + bytes(32)
chal = struct.pack(">IHH", MAGIC, V, 0) + bytes(32) + bytes(range(32))
params = (struct.pack(">IHHIQ", 4096, 4, 2, 3, 0xf) + struct.pack(">QQ", 1 << 20, 1 << 16)
          + b"\x06pc.ram" + b"\x15" + b"0000:00:02.0/vga.vram")
err = struct.pack(">iHH", -4098, 1, 11) + b"bad version"
def ctrl(payload):
    return frame(32, payload)

# engine control messages (core/wire.h TLM_CM_*): 2 data lanes
start = struct.pack(">BHHBIB", 1, 1, 1, 0, 100, 1)
stage3 = struct.pack(">BHQQQ", 2, 2, 1000, 2000, 5)
commit = b"\x03"
commit_stats = struct.pack(">BHIIIIQI", 3, 2, 4, 100, 0, 50, 16384, 900)
devstate = b"\x04" + b"QEVM" + bytes(range(1, 60))
fail = struct.pack(">Bi", 5, -4100) + b"lane 1: peer closed"
abort = b"\x06"
paused = struct.pack(">BHQQQQ", 7, 2, 10, 40960, 11, 45056)
sync = struct.pack(">BHQQ", 8, 2, 10, 11)
synced = struct.pack(">BI", 9, 1234)
keepalive = b"\x0a"
seeds = {
    "ctrl-source": b"\x00" + ctrl(start) + ctrl(sync) + ctrl(paused) + ctrl(stage3) + ctrl(devstate),
    "ctrl-dest": b"\x00" + ctrl(synced) + ctrl(commit) + ctrl(commit_stats) + ctrl(fail),
    "ctrl-keepalive": b"\x00" + ctrl(keepalive) + ctrl(sync) + ctrl(keepalive) + ctrl(keepalive + b"\x00") +
        ctrl(b"\x0b"),
    "ctrl-abort": b"\x00" + ctrl(abort) + ctrl(struct.pack(">Bi", 5, 7) + bytes([0, 10, 200])),
    "ctrl-near-misses": b"\x00" + ctrl(start[:-1]) + ctrl(stage3 + b"\x00") +
        ctrl(struct.pack(">BH", 8, 0xffff)) + ctrl(b"\x04") + ctrl(b"\x0a") +
        ctrl(struct.pack(">BHII", 3, 1, 0, 0)) + ctrl(struct.pack(">BHHBIB", 1, 40, 40, 0, 1, 2)),

    "hello": b"\x00" + frame(16, hello),
    "hello-v3": b"\x00" + frame(16, struct.pack(">IHH", MAGIC, 3, 0) + bytes(48)),
    "challenge": b"\x00" + frame(17, chal),
    "auth": b"\x00" + frame(18, bytes(32)),
    "welcome-params": b"\x00" + frame(19, b"") + frame(20, params) + frame(21, b"\x00\x00\x00\x03"),
    "error": b"\x00" + frame(22, err),
    "pages": b"\x00" + page(1, 0, 0, 0, bytes([7]) * 4096) + page(2, 3, 1, 1, b"") + page(0, 0, 0x8000, 0, b""),
    "page-badcrc": b"\x00" + page(1, 0, 0, 0, b"abc")[:-1] + b"x",
    "data-fin": b"\x00" + frame(1, b"hello world") + frame(2, b""),
    "truncated": b"\x00" + page(5, 1, 4, 2, bytes(100))[:60],
    "small-pages": b"\x03" + page(1, 0, 0, 0, bytes(512)),
}
os.makedirs("corpus", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("corpus", "seed-" + name), "wb") as f:
        f.write(data)

# ---- tests/fuzz/fuzz_apply.c: corpus-apply/ ----
# byte 0: bits 0-1 regions-1, 2 zero pages, 3 xbzrle, 4 devstate, 5 zeroed,
# 6 512-byte pages; byte 1: data lanes - 1; items: kind (value / 4 = lane),
# kind % 4: 0/1 page record (24-byte header + data), 2 control (u16 len +
# payload), 3 short record (u8 flags, u8 region, u16 index, u8 epoch,
# u16 len, data).
PF_ZERO, PF_XBZRLE, PF_PS, PF_PLACED, PF_LAST = 1, 2, 4, 8, 0x8000

def rec(lane, index, epoch, flags, region, data, short=False, placed=0):
    if short:
        return bytes([lane * 4 + 3]) + struct.pack(">BBHBH", flags & 0xff, region, index,
                                                   epoch, len(data)) + data
    return bytes([lane * 4]) + struct.pack(">QIHHII", index, epoch, flags, region,
                                           placed or len(data), 0) + data

def cm(lane, payload):
    return bytes([lane * 4 + 2]) + struct.pack(">H", len(payload)) + payload

def last(lane):
    return rec(lane, 0, 0, PF_LAST, 0, b"")

def uleb(v):
    out = b""
    while True:
        b = v & 0x7f
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out

def xbz(base, runs):
    enc = struct.pack(">I", crc32c(base))
    for z, data in runs:
        enc += uleb(z) + uleb(len(data)) + data
    return enc

P = 512
page = lambda b: bytes([b]) * P
start2 = struct.pack(">BHHBIB", 1, 1, 1, 0, 100, 0)
start2zc = struct.pack(">BHHBIB", 1, 1, 1, 0, 100, 1)
def lanes(t, recs, extra=b""):
    return struct.pack(">BH", t, len(recs)) + b"".join(struct.pack(">Q", r) for r in recs) + extra
apply_seeds = {
    # a whole migration, 2 lanes, 512-byte pages, every kind of record
    "migration": bytes([0x40 | 0x10 | 0x08 | 0x04 | 2, 1]) + cm(0, start2) +
        rec(0, 0, 1, 0, 0, page(1)) + rec(0, 1, 1, PF_ZERO, 0, b"") +
        rec(1, 0, 2, PF_PS, 0, page(2)) + rec(1, 2, 1, 0, 1, page(3)) +
        rec(1, 3, 2, PF_PS | PF_XBZRLE, 0, xbz(bytes(P), [(10, b"abc"), (100, b"z" * 20)])) +
        cm(1, lanes(8, [2, 3])) +
        cm(0, struct.pack(">BHQQQQ", 7, 2, 2, 1024, 3, 1536)) +
        rec(0, 0, 0, 0, 2, page(9), short=True) + last(0) + last(1) +
        cm(0, lanes(2, [3, 3], struct.pack(">Q", 5))) + cm(0, b"\x04hello") +
        cm(0, b"\x0a"),
    "stale-and-keepalive": bytes([0x40 | 0x04, 0]) + cm(0, struct.pack(">BHHBIB", 1, 1, 0, 0, 100, 0)) +
        rec(0, 5, 3, PF_PS, 0, page(1)) + rec(0, 5, 1, 0, 0, page(2)) + cm(0, b"\x0a") +
        rec(0, 7, 3, PF_ZERO, 0, b"", short=True) + rec(0, 6, 1, PF_PLACED, 0, b"", placed=P) +
        cm(0, b"\x06"),
    "zero-copy-4k": bytes([0x20 | 0x04 | 1, 3]) + cm(0, struct.pack(">BHHBIB", 1, 2, 2, 0, 10, 1)) +
        rec(0, 7, 1, 0, 0, bytes(4096)) + rec(3, 2, 1, PF_ZERO, 1, b"") +
        rec(2, 0, 1, PF_PLACED, 1, b"", placed=4096) + cm(1, lanes(8, [1, 0, 1, 1])),
    "near-misses": bytes([0x40 | 0x08, 1]) + cm(0, start2zc) +
        rec(0, 8, 1, 0, 0, page(1)) + rec(0, 0, 1, 0, 3, page(1)) +
        rec(0, 1, 1, PF_XBZRLE, 0, xbz(page(1), [(600, b"x")])) +
        rec(1, 0, 0, PF_ZERO, 0, b"") + last(0) + last(0) +
        cm(0, lanes(2, [1, 1], struct.pack(">Q", 1 << 31))) + cm(0, b"\x04" + bytes(10)),
}
os.makedirs("corpus-apply", exist_ok=True)
for name, data in apply_seeds.items():
    with open(os.path.join("corpus-apply", "seed-" + name), "wb") as f:
        f.write(data)

# ---- tests/fuzz/fuzz_handshake.c: corpus-handshake/ ----
# byte 0: bit 0 side (0 listener, 1 connector), bits 1-2 stage, bits 3-4
# protection (0 encrypt, 1 integrity, 2 none), bit 5 chacha, bit 6 data
# lane 1, bit 7 mismatched protection; then the message bytes.
def sel(side, stage, prot=0, chacha=0, lane1=0, mismatch=0):
    return bytes([side | stage << 1 | prot << 3 | chacha << 5 | lane1 << 6 | mismatch << 7])

V3 = 3
hello3 = struct.pack(">IHH", MAGIC, V3, 0) + bytes(range(16)) + bytes(32) + b"\x00\x01"
chal3 = struct.pack(">IHH", MAGIC, V3, 0) + bytes(range(32))
good_params = struct.pack(">IHHIQ", 4096, 1, 1, 7, 1) + struct.pack(">Q", 1 << 20) + b"\x03ram"
err3 = struct.pack(">iHH", -4098, V3, 11) + b"bad version"
hs_seeds = {
    "listener-hello": sel(0, 0) + frame(16, hello3),
    "listener-hello-v2": sel(0, 0) + frame(16, hello),
    "listener-auth-bad": sel(0, 1) + frame(18, bytes(32)),
    "listener-error": sel(0, 1, 1) + frame(22, err3),
    "listener-params": sel(0, 2) + frame(1, frame(20, good_params)),
    "listener-params-integrity": sel(0, 2, 1) + frame(1, frame(20, good_params)),
    "listener-params-none": sel(0, 2, 2) + frame(20, good_params),
    "listener-params-chacha": sel(0, 2, 0, 1) + frame(1, frame(20, good_params)),
    "listener-params-bad": sel(0, 2) + frame(1, frame(20, struct.pack(">IHHIQ", 4000, 0, 0, 0, 0))),
    "listener-params-64lanes": sel(0, 2, 2) + frame(20, struct.pack(">IHHIQ", 4096, 64, 0, 0, 0)),
    "listener-data-lane": sel(0, 2, 0, 0, 1) + frame(1, frame(20, good_params)),
    "listener-mismatch": sel(0, 1, 1, 0, 0, 1) + frame(18, bytes(32)),
    "connector-challenge": sel(1, 0) + frame(17, chal3),
    "connector-error": sel(1, 0, 2) + frame(22, err3),
    "connector-welcome-bad": sel(1, 1) + frame(19, bytes(32)),
    "connector-ack": sel(1, 2) + frame(1, frame(21, b"\x00\x00\x00\x07")),
    "connector-ack-integrity": sel(1, 2, 1) + frame(1, frame(21, b"\x00\x00\x00\x03")),
    "connector-ack-none": sel(1, 2, 2) + frame(21, b"\x00\x00\x00\x07"),
    "connector-ack-error": sel(1, 2, 0, 1) + frame(1, frame(22, err3)),
    "connector-ack-short": sel(1, 2, 2) + frame(21, b"\x00\x07"),
}
os.makedirs("corpus-handshake", exist_ok=True)
for name, data in hs_seeds.items():
    with open(os.path.join("corpus-handshake", "seed-" + name), "wb") as f:
        f.write(data)
