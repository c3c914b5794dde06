"""Observability around the reference system: Prometheus config and alert rules, Alertmanager,
the Grafana dashboard generator, and the watch that turns lost acknowledged writes into a
metric (docs/observability.md)."""
