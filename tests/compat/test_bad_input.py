"""Bad input on the Kafka port: the node answers or closes that one connection, never
crashes, and keeps serving everyone else."""

import random
import socket
import struct

from conftest import wait_until

# (api key, lowest, highest) as the broker advertises them; checked against ApiVersions below.
def api_versions(bootstrap):
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        data = recv_exact(s, size)
    corr, err, n = struct.unpack(">ihi", data[:10])
    assert (corr, err) == (1, 0)
    out = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", data[10 + 6 * i:16 + 6 * i])
        out[k] = (lo, hi)
    return out


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def send_raw(bootstrap, payload, read=True):
    """Sends bytes; returns the response frame, or None when the node closed the connection."""
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        if not read:
            return None
        try:
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            return recv_exact(s, size)
        except (ConnectionError, socket.timeout, OSError):
            return None


def still_serving(node):
    assert node.proc.poll() is None, f"node died: {node.log_tail()}"
    assert 3 in api_versions(node.bootstrap), "Metadata still advertised"


def frame(api_key, version, corr, body=b""):
    header = struct.pack(">hhih", api_key, version, corr, 1) + b"t"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def test_garbage_truncated_and_oversized_frames(node):
    rnd = random.Random(7)
    for _ in range(50):
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
        send_raw(node.bootstrap, junk, read=False)
    # A length prefix larger than socket.request.max.bytes, and a negative one.
    assert send_raw(node.bootstrap, struct.pack(">i", 2**31 - 1) + b"abc") is None
    assert send_raw(node.bootstrap, struct.pack(">i", -5)) is None
    # A frame cut short: the node waits for the rest, then we hang up.
    send_raw(node.bootstrap, struct.pack(">i", 100) + b"\x00\x03", read=False)
    # Valid frames with bodies cut at every length.
    full = frame(3, 12, 9, b"\x01\x00\x00\x00")
    for cut in range(4, len(full)):
        send_raw(node.bootstrap, struct.pack(">i", cut - 4) + full[4:cut], read=False)
    still_serving(node)


def test_unknown_api_keys_and_versions_outside_the_range(node):
    supported = api_versions(node.bootstrap)
    assert send_raw(node.bootstrap, frame(999, 0, 5)) is None, "unknown API key: connection closed"
    for key, (lo, hi) in supported.items():
        for version in (lo - 1, hi + 1):
            if version < 0:
                continue
            resp = send_raw(node.bootstrap, frame(key, version, 42))
            if key == 18:
                # KIP-511: ApiVersions answers UNSUPPORTED_VERSION (35) with our ranges, at v0.
                corr, err = struct.unpack(">ih", resp[:6])
                assert (corr, err) == (42, 35)
            else:
                assert resp is None, f"api {key} v{version} should close the connection"
    still_serving(node)


def test_random_bodies_for_every_api(node):
    rnd = random.Random(11)
    supported = api_versions(node.bootstrap)
    for key, (lo, hi) in supported.items():
        for version in range(lo, hi + 1):
            body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
            send_raw(node.bootstrap, frame(key, version, 1, body), read=False)
    wait_until("the node to keep serving", lambda: still_serving(node) is None)
