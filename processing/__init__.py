"""Processing: pure KPI functions by topic, run detection, and the service that applies them to stored data."""
