"""Collectors: read-only toward the plant; OPC UA and MQTT in, samples to the store."""
