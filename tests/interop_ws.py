"""WebSocket side of tests/interop.sh: a client machat did not write.

Uses the `websockets` library's sync client the way the original Go client
talks: the handshake as one text message with no newline, a chat line as
`text\n`. Checks that every message from the server is one text message
holding one `\n`-terminated line, that a ping gets its pong, and that both
its own echo and the TCP peer's line arrive. Every wait is bounded.

usage: interop_ws.py URL NAME ROOM LINE PEER_NAME PEER_LINE TIMEOUT_SECONDS
Exit status 0 on success, 1 with a message on stderr otherwise.
"""

import json
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def fail(message):
    print(f"interop_ws.py: FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    if len(sys.argv) != 8:
        fail(f"expected 7 arguments, got {len(sys.argv) - 1}: {sys.argv[1:]}")
    url, name, room, line, peer_name, peer_line, timeout = sys.argv[1:]
    timeout = float(timeout)
    own_echo = f"{name}:{line}\n"
    peer_message = f"{peer_name}:{peer_line}\n"

    try:
        ws = connect(url, origin="http://localhost:8099/", open_timeout=timeout,
                     close_timeout=timeout, proxy=None)
    except Exception as error:  # any failure to connect or upgrade
        fail(f"cannot open {url}: {error!r}")
    with ws:
        ws.send(json.dumps({"name": name, "room": room}, separators=(",", ":")))
        ws.send(line + "\n")

        seen_own = seen_peer = False
        deadline = time.monotonic() + timeout
        while not (seen_own and seen_peer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(f"timed out after {timeout}s: own echo seen: {seen_own}, "
                     f"{peer_name}'s line seen: {seen_peer}")
            try:
                message = ws.recv(timeout=remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as error:
                fail(f"server closed the connection: {error}")
            if not isinstance(message, str):
                fail(f"expected text messages only, got binary {message!r}")
            if not message.endswith("\n") or message.count("\n") != 1:
                fail(f"expected one line ending in \\n per message, got {message!r}")
            print(f"received {message!r}", flush=True)
            if message == own_echo:
                seen_own = True
            elif message == peer_message:
                seen_peer = True
            elif message.startswith("error:"):
                fail(f"server reported {message!r}")

        pong = ws.ping(b"interop")
        if not pong.wait(timeout):
            fail(f"no pong within {timeout}s")
        print("pong received", flush=True)
    print("websocket client: OK", flush=True)


if __name__ == "__main__":
    main()
