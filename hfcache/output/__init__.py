"""What hfcache shows and writes: the one Rich console, JSON, Prometheus metrics, files written safely."""
