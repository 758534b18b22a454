"""scripts/bench stalled-streams: 200 live notification streams (SSE) through one
gateway, 50 of which stop reading after their headers, while 20 clients call GET
/v1/notifications through the same gateway for BENCH_STEP_SECS, each once a second (an
open loop: on the MongoDB stand-in a closed loop like wrk's takes all of its CPU, and
the events that feed the streams stop), then as fast as they can (wrk). Notifications
keep coming to every stream's account (follows and unfollows by 8 actors at once).
Prints the 20 clients' latency with only the 150 reading streams open, then with the
50 stalled ones too; with STALLED_READ=1 the 50 read like the others (a control).

    python scripts/stalled-streams.py http://127.0.0.1:<gateway port> <seconds>
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

API, STEP = sys.argv[1], int(sys.argv[2])
HOST, PORT = urllib.parse.urlsplit(API).hostname, urllib.parse.urlsplit(API).port
READING, STALLED, STREAMS_PER_ACCOUNT = 150, 50, 4


def call(method, path, body=None, token=None):
    req = urllib.request.Request(API + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json",
                 **({"authorization": "Bearer " + token} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def sign_up(name):
    a = call("POST", "/v1/accounts", {"username": name, "email": f"{name}@example.com",
                                      "password": "stalled streams bench"})
    return a["user"]["id"], a["access_token"]


async def open_stream(token, stalled):
    """An SSE stream; a stalled one reads its headers, then nothing, on a small window."""
    sock = socket.socket()
    if stalled:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, PORT))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((f"GET /v1/notifications/stream HTTP/1.1\r\nHost: {HOST}\r\n"
                  f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer


async def drain(reader, counter):
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        counter[0] += chunk.count(b"event: notification")


async def notify(actors, targets, stop):
    """Follows and unfollows, round after round, each one a notification."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        for actor in actors:
            for target in targets:
                if stop.is_set():
                    return
                for method in ("PUT", "DELETE"):
                    try:
                        await loop.run_in_executor(
                            None, call, method, f"/v1/users/{target}/follow", None, actor)
                    except Exception:
                        pass


async def paced(token, seconds):
    """20 keep-alive connections, each asking once a second; the latencies (ms)."""
    latencies, deadline = [], asyncio.get_running_loop().time() + seconds
    request = (f"GET /v1/notifications?page_size=20 HTTP/1.1\r\nHost: {HOST}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()

    async def client(start):
        await asyncio.sleep(start)
        reader, writer = await asyncio.open_connection(HOST, PORT)
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            began = loop.time()
            writer.write(request)
            await writer.drain()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append((loop.time() - began) * 1000)
            await asyncio.sleep(max(0, 1 - (loop.time() - began)))
        writer.close()

    await asyncio.gather(*(client(i / 20) for i in range(20)))
    latencies.sort()
    pick = lambda q: f"{latencies[min(len(latencies) - 1, int(q * len(latencies)))]:.1f}ms"
    return {"50": pick(0.5), "90": pick(0.9), "99": pick(0.99)}, f"{len(latencies) / seconds:.1f}", "0"


def wrk(token):
    out = subprocess.run(
        ["wrk", "-t2", "-c20", f"-d{STEP}s", "--latency", "-H", f"Authorization: Bearer {token}",
         f"{API}/v1/notifications?page_size=20"],
        capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    rate = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return latency, rate, errors.group(1) if errors else "0"


async def main():
    accounts = (READING + STALLED) // STREAMS_PER_ACCOUNT
    users = [sign_up(f"reader_{i}") for i in range(accounts)]
    actors = [sign_up(f"actor_{i}")[1] for i in range(8)]
    _, caller = sign_up("caller")
    tokens = [t for _, t in users for _ in range(STREAMS_PER_ACCOUNT)]
    received, stop = [0], asyncio.Event()
    reading = [await open_stream(t, False) for t in tokens[:READING]]
    drains = [asyncio.create_task(drain(r, received)) for r, _ in reading]
    targets = [u for u, _ in users]
    noise = [asyncio.create_task(notify([a], targets, stop)) for a in actors]
    await asyncio.sleep(3)
    loop = asyncio.get_running_loop()
    print(f"{READING} reading streams, notifications flowing; 20 clients for {STEP} s ...",
          flush=True)
    seen = received[0]
    before = await paced(caller, STEP)
    before_wrk = await loop.run_in_executor(None, wrk, caller)
    got_before, seen = received[0] - seen, received[0]
    # STALLED_READ=1: the 50 read like the others (a control: what 50 more streams cost).
    control = os.environ.get("STALLED_READ") == "1"
    stalled = [await open_stream(t, not control) for t in tokens[READING:]]
    if control:
        drains += [asyncio.create_task(drain(r, received)) for r, _ in stalled]
    await asyncio.sleep(3)
    print(f"... and with {STALLED} more streams that read nothing ...", flush=True)
    seen = received[0]
    after = await paced(caller, STEP)
    after_wrk = await loop.run_in_executor(None, wrk, caller)
    got_after = received[0] - seen
    stop.set()
    await asyncio.gather(*noise)
    for task in drains:
        task.cancel()
    for _, writer in reading + stalled:
        writer.close()
    print(f"\nGET /v1/notifications, 20 connections, {STEP} s each:")
    print(f"{'':44} {'p50':>9} {'p90':>9} {'p99':>9} {'req/s':>7} {'non-2xx':>8}")
    for name, (lat, rate, errors) in (
            ("150 streams reading, 1/s per client", before),
            ("150 streams reading, wrk (closed loop)", before_wrk),
            (f"+ {STALLED} not reading, 1/s per client", after),
            (f"+ {STALLED} not reading, wrk (closed loop)", after_wrk)):
        print(f"{name:44} {lat.get('50', '-'):>9} {lat.get('90', '-'):>9} "
              f"{lat.get('99', '-'):>9} {rate:>7} {errors:>8}")
    print(f"notification events the reading streams received: {got_before} in the first "
          f"{2 * STEP} s, {got_after} in the second")


asyncio.run(main())
