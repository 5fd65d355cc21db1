#!/usr/bin/env python3
"""A bounded HTTP load generator (standard library only), used by the tests and benchmarks.

It sends --requests GET requests over --concurrency parallel clients, one new TCP (or TLS)
connection per request (Connection: close), except for the first --keep-alive clients, which
keep their connection open from one request to the next (and, as HTTP clients do for an
idempotent request, send it again once on a new connection when the server closed the idle
connection before answering: counted in "keepalive_retries"). The last --post clients send POST
instead of GET (a write: never sent again, by them or by nginx, whatever failed; "get_ok",
"post_ok", "get_failed" and "post_failed" count each method's answers and failures). It stops by itself: after the last request,
after --max-seconds, or as soon as --stop-file exists. It prints one JSON object: how many
requests answered 200, how many failed and why, and which app versions and hosts answered
(from the JSON fields "version" and "host"), when the load started and ended and when each
version (or value of another field: --span-field) first and last answered (Unix time, so that a test can check the load spanned a
deploy and both releases answered), and the latencies (median, 99th percentile, maximum, and
when the slowest request started). HTTPS certificates are not verified (the test hosts use
self-signed ones).

    python3 loadgen.py http://127.0.0.1:8000/ --requests 3000 --concurrency 8
    python3 loadgen.py https://10.89.0.2/ --requests 3000 --concurrency 8
"""

import argparse
import collections
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    parser.add_argument("--stop-file", help="stop as soon as this file exists")
    parser.add_argument("--keep-alive", type=int, default=0, metavar="N",
                        help="the first N clients keep their connection open between requests")
    parser.add_argument("--post", type=int, default=0, metavar="N",
                        help="the last N clients send POST (never retried) instead of GET")
    parser.add_argument("--span-field", default="version",
                        help="JSON field whose values' first and last answers are reported (spans)")
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")  # a query tags a load's requests
    lock = threading.Lock()
    counts = collections.Counter()
    errors = collections.Counter()
    versions = collections.Counter()
    hosts = collections.Counter()
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    latencies = []
    slowest = [0.0, 0.0]  # latency, Unix time it started
    spans = {}  # value of --span-field -> [first, last] Unix time of its answers
    failure_times = []
    next_index = [0]
    started = time.monotonic()
    started_at = time.time()
    deadline = started + args.max_seconds

    def take() -> bool:
        with lock:
            if next_index[0] >= args.requests or time.monotonic() > deadline:
                return False
            if args.stop_file and next_index[0] % 50 == 0 and os.path.exists(args.stop_file):
                next_index[0] = args.requests
                return False
            next_index[0] += 1
            return True

    def connect():
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=args.timeout, context=tls)
        return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)

    def send(conn, keep_alive, method):
        headers = {} if keep_alive else {"Connection": "close"}
        if method == "POST":
            conn.request("POST", path, body=b"{}", headers={**headers, "Content-Type": "application/json"})
        else:
            conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp, resp.read()

    def client(keep_alive: bool, method: str) -> None:
        conn = None
        while take():
            start = time.monotonic()
            start_at = time.time()
            try:
                reused = conn is not None
                conn = conn or connect()
                try:
                    resp, body = send(conn, keep_alive, method)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused or method == "POST":
                        raise
                    # the server closed the idle connection as the request went out: once more, new
                    conn.close()
                    conn = connect()
                    with lock:
                        counts["keepalive_retries"] += 1
                    resp, body = send(conn, keep_alive, method)
                if not keep_alive or resp.will_close:
                    conn.close()
                    conn = None
                if resp.status == 200:
                    try:
                        data = json.loads(body)
                    except ValueError:
                        data = {}
                    version = str(data.get("version", "?"))
                    key = str(data.get(args.span_field, "?"))
                    with lock:
                        counts["ok"] += 1
                        counts[f"{method.lower()}_ok"] += 1
                        versions[version] += 1
                        span = spans.setdefault(key, [start_at, start_at])
                        span[0] = min(span[0], start_at)
                        span[1] = max(span[1], time.time())
                        hosts[str(data.get("host", "?"))] += 1
                else:
                    with lock:
                        counts["failed"] += 1
                        counts[f"{method.lower()}_failed"] += 1
                        errors[f"HTTP {resp.status}"] += 1
                        failure_times.append((round(start - started, 3), round(time.monotonic() - started, 3)))
            except Exception as exc:  # every failure counts, whatever its kind
                if conn is not None:
                    conn.close()
                    conn = None
                with lock:
                    counts["failed"] += 1
                    counts[f"{method.lower()}_failed"] += 1
                    failure_times.append((round(start - started, 3), round(time.monotonic() - started, 3)))
                    errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
            with lock:
                latency = time.monotonic() - start
                latencies.append(latency)
                if latency > slowest[0]:
                    slowest[:] = [latency, start_at]
            if args.pause:
                time.sleep(args.pause)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i < args.keep_alive, "POST" if i >= args.concurrency - args.post else "GET"))
               for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    result = {
        "requests": counts["ok"] + counts["failed"],
        "ok": counts["ok"],
        "failed": counts["failed"],
        "get_ok": counts["get_ok"],
        "post_ok": counts["post_ok"],
        "get_failed": counts["get_failed"],
        "post_failed": counts["post_failed"],
        "post_clients": min(args.post, args.concurrency),
        "keepalive_retries": counts["keepalive_retries"],
        "errors": dict(errors),
        "failures_at_s": failure_times[:20],
        "versions": dict(versions),
        "hosts": dict(hosts),
        "seconds": round(elapsed, 2),
        "started_at": round(started_at, 3),
        "ended_at": round(started_at + elapsed, 3),
        "spans": {v: [round(a, 3), round(b, 3)] for v, (a, b) in spans.items()},
        "slowest_started_at": round(slowest[1], 3) if latencies else None,
        "max_latency_s": round(latencies[-1], 3) if latencies else None,
        "p50_latency_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
        "p99_latency_s": round(latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)], 4) if latencies else None,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
