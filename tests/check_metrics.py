#!/usr/bin/env python3
"""Checks that a running machat's /metrics is valid Prometheus text.

Usage: check_metrics.py HTTP_ADDR [TCP_ADDR]

With TCP_ADDR, it first causes some traffic (two TCP members chat in one
room, one client sends a malformed handshake) so the counters have values
to check. Then it fetches http://HTTP_ADDR/metrics, parses it with
prometheus_client's own parser (text_string_to_metric_families), checks
the exposition's structure line by line (HELP and TYPE once per family,
before its samples; no duplicate series) and that the expected metric
families are there with plausible values. Exits non-zero on any problem.
tests/metrics.sh starts a server and runs this.
"""

import json
import re
import socket
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 10

EXPECTED = {
    "machat_connections": "gauge",
    "machat_rooms": "gauge",
    "machat_room_members": "gauge",
    "machat_queued_output_bytes": "gauge",
    "machat_buffers": "gauge",
    "machat_connections_accepted": "counter",
    "machat_connections_refused": "counter",
    "machat_joins": "counter",
    "machat_messages_received": "counter",
    "machat_deliveries": "counter",
    "machat_received_bytes": "counter",
    "machat_sent_bytes": "counter",
    "machat_slow_consumer_disconnects": "counter",
    "machat_accept_pauses": "counter",
    "machat_loop_turns": "counter",
    "machat_handshake_errors": "counter",
    "machat_http_responses": "counter",
}


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def read_line(reader):
    line = reader.readline()
    if not line.endswith(b"\n"):
        raise AssertionError(f"connection closed while waiting for a line (got {line!r})")
    return line[:-1].decode()


def make_traffic(tcp):
    """Two members chat in room 'metrics'; one client fails its handshake."""
    clients = []
    for name in ("Mina", "Ola"):
        sock = socket.create_connection(tcp, timeout=TIMEOUT)
        sock.sendall(json.dumps({"name": name, "room": "metrics"}).encode())
        clients.append((sock, sock.makefile("rb")))
    # Each joins when its first line is echoed; then Mina speaks to both.
    for (sock, reader), name in zip(clients, ("Mina", "Ola")):
        sock.sendall(b"hi\n")
        while read_line(reader) != f"{name}:hi":
            pass
    clients[0][0].sendall(b"counted\n")
    for _, reader in clients:
        while read_line(reader) != "Mina:counted":
            pass
    bad = socket.create_connection(tcp, timeout=TIMEOUT)
    bad.sendall(b"not json\n")
    line = read_line(bad.makefile("rb"))
    assert line.startswith("error: handshake must be a JSON object"), line
    bad.close()
    return clients


def check_structure(text):
    """What prometheus_client's parser tolerates but the format forbids."""
    helped, typed, seen, series = set(), {}, set(), set()
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        assert line.strip(), f"{where}: empty line"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"{where}: second HELP for {name}"
            helped.add(name)
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in typed, f"{where}: second TYPE for {name}"
            assert name not in seen, f"{where}: TYPE after samples of {name}"
            assert kind in ("counter", "gauge"), f"{where}: unexpected type {kind}"
            typed[name] = kind
            current = name
            continue
        assert not line.startswith("#"), f"{where}: unexpected comment"
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
        assert match, f"{where}: not a sample line"
        name, labels, value = match.groups()
        assert name == current, f"{where}: sample outside its family ({current})"
        if name.endswith("_seconds_total") or name.endswith("_seconds"):
            # Durations are fractional seconds, as Prometheus names them.
            assert re.fullmatch(r"\d+\.\d+", value), f"{where}: value is not a non-negative decimal"
        else:
            assert re.fullmatch(r"\d+", value), f"{where}: value is not a non-negative integer"
        assert (name, labels) not in series, f"{where}: duplicate series"
        series.add((name, labels))
        seen.add(name)
        if typed[name] == "counter":
            assert name.endswith("_total"), f"{where}: counter without _total"
    assert typed.keys() == helped, "every family has HELP and TYPE"
    assert typed.keys() == seen, "every family has samples"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    url = f"http://{sys.argv[1]}/metrics"
    clients = make_traffic(address(sys.argv[2])) if len(sys.argv) == 3 else []

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200, response.status
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("text/plain; version=0.0.4"), content_type
        text = response.read().decode("utf-8")
    check_structure(text)

    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, kind in EXPECTED.items():
        assert name in families, f"missing metric family {name}"
        assert families[name].type == kind, f"{name} is {families[name].type}, expected {kind}"

    def value(name, **labels):
        for sample in families[name.removesuffix("_total")].samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
        raise AssertionError(f"no sample {name}{labels}")

    assert value("machat_loop_turns_total") > 0
    assert value("machat_http_responses_total", status="200") >= 0
    assert value("machat_slow_consumer_disconnects_total") == 0
    if clients:
        assert value("machat_connections", transport="tcp") >= 2
        assert value("machat_rooms") >= 1
        assert value("machat_room_members") >= 2
        assert value("machat_joins_total") >= 2
        assert value("machat_messages_received_total") >= 3
        assert value("machat_deliveries_total") >= 4
        assert value("machat_handshake_errors_total", reason="malformed") >= 1
        assert value("machat_received_bytes_total") > 0
        assert value("machat_sent_bytes_total") > 0
    for sock, _ in clients:
        sock.close()
    samples = sum(len(family.samples) for family in families.values())
    print(f"/metrics parsed by prometheus_client: {len(families)} families, {samples} samples: OK")


if __name__ == "__main__":
    main()
