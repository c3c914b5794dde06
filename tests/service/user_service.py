"""A small service that is not the reference system, with its own HTTP metric names.

Run as `python tests/service/user_service.py PORT`. It exports what a user's service
typically exports (prometheus_client, its own names) and nothing from chaosemergence:

- `shop_http_requests_total{handler, status}`: requests served, by status;
- `shop_http_request_duration_seconds`: latency histogram;
- `shop_backend_calls_total`: outgoing calls, retries included;
- `shop_cache_requests_total{result}` and `shop_computations_total`;
- `emergence_defense_events_total{defense, kind}`: what the embedded library would count.

`GET /work?status=503&ms=400&attempts=3&miss=1&computed=1` answers with `status` and records
one request that took `ms` milliseconds (recorded, not slept: the numbers are exact) and cost
`attempts` backend calls; `GET /defense?name=circuit_breaker` counts one activation.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "shop_http_requests", "Requests served", ["handler", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Request latency",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
CALLS = Counter("shop_backend_calls", "Backend calls, retries included", registry=REGISTRY)
CACHE = Counter("shop_cache_requests", "Cache lookups", ["result"], registry=REGISTRY)
COMPUTED = Counter("shop_computations", "Values computed on a miss", registry=REGISTRY)
EVENTS = Counter(
    "emergence_defense_events", "Defense events", ["defense", "kind"], registry=REGISTRY
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/metrics":
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif parts.path == "/work":
            status = int(query.get("status", "200"))
            REQUESTS.labels("/work", str(status)).inc()
            LATENCY.observe(float(query.get("ms", "10")) / 1000)
            CALLS.inc(int(query.get("attempts", "1")))
            if "miss" in query:
                CACHE.labels("miss").inc()
            if "computed" in query:
                COMPUTED.inc()
            self._answer(status, b"ok\n" if status < 400 else b"failed\n", "text/plain")
        elif parts.path == "/defense":
            EVENTS.labels(query["name"], query.get("kind", "activated")).inc()
            self._answer(200, b"counted\n", "text/plain")
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
