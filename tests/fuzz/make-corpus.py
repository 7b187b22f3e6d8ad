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
