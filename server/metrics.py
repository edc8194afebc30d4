"""Prometheus metrics of one server instance, on their own registry (several servers per process in tests).

Exposed over HTTP on ``--metrics-port`` (separate from the gRPC port), text format at any path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Latency buckets in seconds: 1 ms .. 30 s (decode can take that long at the limit).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)

STAGES = ("decode", "queue", "features", "model", "total")


class ServerMetrics:
    """Counters, histograms and gauges the server updates; ``serve_http`` exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stqa_requests", "gRPC requests finished, by method and status code",
            ["method", "code"], registry=self.registry,
        )
        self.stage_latency = Histogram(
            "stqa_stage_latency_seconds",
            "Answer latency per stage: decode (worker pool), queue (waiting for the model thread), "
            "features and model (the batched forward), total (whole handler)",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "stqa_batch_size", "Requests run together in one predict call",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.dropped = Counter(
            "stqa_batch_dropped", "Queued requests dropped before the forward, by reason",
            ["reason"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "stqa_queue_depth", "Decoded requests waiting for the model", registry=self.registry,
        )
        self.admission_refused = Counter(
            "stqa_admission_refused", "Answer calls refused at admission (over --max-in-flight or "
            "--max-inflight-mb), before their request was read", registry=self.registry,
        )
        self.in_flight = Gauge(
            "stqa_in_flight", "Answer calls being handled right now", registry=self.registry,
        )
        self.cache_hits = Counter(
            "stqa_cache_hits", "Answer calls whose video's features were in the cache (no decode, no backbone)",
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "stqa_cache_misses", "Answer calls whose video was not in the cache", registry=self.registry,
        )
        self.cache_evictions = Counter(
            "stqa_cache_evictions", "Cached videos evicted to stay under --cache-mb", registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "stqa_cache_bytes", "Bytes held by the video cache (at most --cache-mb)", registry=self.registry,
        )
        self.cache_entries = Gauge(
            "stqa_cache_entries", "Videos held by the video cache", registry=self.registry,
        )
        self._http = None

    def serve_http(self, host: str, port: int) -> int:
        """Start the HTTP exporter in a daemon thread; returns the bound port (``port`` 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP exporter (if started)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
