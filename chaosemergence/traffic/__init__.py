"""Locust traffic for the reference system, always run as subprocesses (locust is never imported).

``start_traffic(TrafficSpec(...), state_dir)`` launches Locust (one local process, or a master
and N workers), ``stop_traffic(state_dir)`` stops it from any process and returns a
``TrafficSummary``, ``traffic_status(state_dir)`` says whether it runs. The locustfile itself
(``locustfile.py``) is only ever loaded by the Locust subprocesses.
"""

from chaosemergence.traffic.runner import (
    LOCUSTFILE,
    EndpointSummary,
    TrafficError,
    TrafficRun,
    TrafficSpec,
    TrafficSummary,
    start_traffic,
    stop_traffic,
    traffic_status,
)

__all__ = [
    "LOCUSTFILE",
    "EndpointSummary",
    "TrafficError",
    "TrafficRun",
    "TrafficSpec",
    "TrafficSummary",
    "start_traffic",
    "stop_traffic",
    "traffic_status",
]
