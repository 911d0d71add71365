"""Processing: pure KPI functions by topic, run detection, and the service applying them to stored data."""
