"""Readiness probe for a Kafka-protocol broker: send ApiVersions (v0) and check
the answer. An open port alone does not prove the broker speaks Kafka yet.
Usage: kafka_ping.py PORT   (exit 0 = answered with error_code 0)"""
import socket
import struct
import sys

port = int(sys.argv[1])
CORRELATION_ID = 7
client_id = b"sinkd-up"
# Request header v1: api_key=18 (ApiVersions), api_version=0, correlation id,
# client id; the v0 body is empty. Framed by a 4-byte big-endian length.
req = struct.pack(">hhih", 18, 0, CORRELATION_ID, len(client_id)) + client_id
with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
    s.sendall(struct.pack(">i", len(req)) + req)

    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                sys.exit("connection closed by broker")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", read(4))
    body = read(size)
corr, err, n_apis = struct.unpack(">ihi", body[:10])
if corr != CORRELATION_ID or err != 0 or n_apis <= 0:
    sys.exit(f"bad ApiVersions answer: correlation={corr} error={err} apis={n_apis}")
