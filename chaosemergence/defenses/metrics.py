"""Metrics recorders: the interface every defense records through, and implementations.

``MetricsRecorder`` is the protocol (``increment`` and ``observe``); ``NULL_RECORDER``
(the default) records nothing, ``InMemoryRecorder`` keeps everything for tests.
"""

from ._recorder import NULL_RECORDER, InMemoryRecorder, MetricsRecorder, NullRecorder

__all__ = ["NULL_RECORDER", "InMemoryRecorder", "MetricsRecorder", "NullRecorder"]
