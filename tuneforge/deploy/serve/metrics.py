"""Prometheus metrics of one server: its own registry (not the process-global one), so two
apps in one process (tests, notebooks) never share or double-register counters."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets around the targets (p99 <= 250 ms): fine below, coarse above.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tuneforge_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("tuneforge_request_latency_seconds", "POST /v1/predict latency, body read to response",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("tuneforge_batch_size", "examples per forward pass", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_latency = Histogram("tuneforge_batch_latency_seconds", "time of one forward pass",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.pending = Gauge("tuneforge_pending_requests", "requests queued or running", registry=self.registry)
        self.shed = Counter("tuneforge_shed", "requests refused with 503 because the queue was full",
                            registry=self.registry)
        self.timeouts = Counter("tuneforge_timeouts", "requests that ran past the per-request timeout (504)",
                                registry=self.registry)
        self.ready = Gauge("tuneforge_model_ready", "1 once the model is loaded", registry=self.registry)

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.batch_latency.observe(seconds)
