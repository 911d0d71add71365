"""The InfluxDB 2 store: the TimeSeriesStore interface on an InfluxDB 2 server (influxdb-client).

Samples are points of one measurement tagged with their series name (storage/lineprotocol.py has the layout),
written as line-protocol strings in batches of `batch_lines` points with integer µs timestamps — never
`Point` objects (about 13× slower for the same bytes). Reads are Flux queries (storage/flux.py); downsampling
runs in the server with aggregateWindow.

Writes are synchronous: `write_rows` returns only when the server has accepted every batch, so the store
writer (collectors/writer.py) advances its spool checkpoint only past samples InfluxDB holds. A slow or
absent server is retried with exponential backoff (honouring Retry-After) for up to `retry_s`; then the write
raises StoreError, the store writer keeps the samples in the spool and tries again later, and the spool grows
meanwhile (backpressure up to its size limit, where the collectors refuse and count). A batch the server
rejects as data (400, 413, 422: a point beyond the bucket's retention, a field type conflict) is split in
halves until the rejected points are alone; those are counted and logged, the rest is written. A refused
token or a missing bucket (401, 403, 404) is a StoreError at once, with what to check.

Counters (`stats()`): points written, refused before sending (a name or text line protocol cannot carry),
rejected by the server, values written without a value field (NaN, ±inf), retries, failed writes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from biopilot.config import InfluxConfig
from biopilot.errors import StoreError
from biopilot.records import Buckets, Latest, Row, SeriesData
from biopilot.samples import Sample, from_us, to_us
from storage import flux
from storage.lineprotocol import Encoded, Encoder

log = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REJECTED_STATUS = frozenset({400, 413, 422})
_LOG_EVERY_S = 60.0


class _RefusedError(Exception):
    """The server refused the request for good (credentials, bucket): retrying does not help."""


class _RejectedError(Exception):
    """The server rejected the data of the request (some or all of its points)."""


class _TransientError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InfluxStore:
    """TimeSeriesStore on an InfluxDB 2 bucket. Thread-safe (the HTTP pool is; counters take a lock)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        measurement: str = "biopilot",
        timeout_s: float = 10.0,
        batch_lines: int = 5000,
        retry_s: float = 10.0,
        read_only: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.dialect import Dialect

        self.url, self.org, self.bucket, self.measurement = url, org, bucket, measurement
        self.batch_lines = batch_lines
        self.retry_s = retry_s
        self.read_only = read_only
        self._sleep = sleep
        self._encoder = Encoder(measurement)
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), enable_gzip=True, retries=False
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()
        self._dialect = Dialect(
            header=True,
            delimiter=",",
            comment_prefix="#",
            annotations=["datatype", "group", "default"],
            date_time_format="RFC3339Nano",
        )
        self._lock = threading.Lock()
        self._stats = {
            "written": 0,
            "refused": 0,
            "rejected": 0,
            "nonfinite": 0,
            "retries": 0,
            "failed_writes": 0,
        }
        self._last_error = ""
        self._last_log: dict[str, float] = {}

    @classmethod
    def from_config(cls, cfg: InfluxConfig, *, read_only: bool = False) -> InfluxStore:
        """The store a site config names; the token from the environment variable token_env names."""
        token = os.environ.get(cfg.token_env)
        if not token:
            raise StoreError(
                f"storage.influxdb.token_env: the environment variable {cfg.token_env} is not set "
                f"(it holds the API token for bucket {cfg.bucket!r} of org {cfg.org!r} at {cfg.url})"
            )
        return cls(
            cfg.url,
            cfg.org,
            cfg.bucket,
            token,
            measurement=cfg.measurement,
            timeout_s=cfg.timeout_s,
            batch_lines=cfg.batch_lines,
            retry_s=cfg.retry_s,
            read_only=read_only,
        )

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, samples: Sequence[Sample]) -> int:
        return self.write_rows(
            [
                (
                    s.series,
                    to_us(s.ts),
                    s.value,
                    s.status,
                    to_us(s.server_ts) if s.server_ts is not None else None,
                )
                for s in samples
            ]
        )

    def write_rows(self, rows: Sequence[Row]) -> int:
        """Rows of (series, source µs, value, status, server µs or None), as the spool keeps them.

        Returns when InfluxDB accepted every point it did not reject as data; StoreError when the server
        is down, slow beyond retry_s, or refuses the token or bucket (then nothing may be taken as stored).
        """
        self._check_writable()
        return self._write_encoded(self._encoder.encode(rows))

    def write_arrays(
        self,
        series: str,
        ts_us: np.ndarray,
        values: np.ndarray,
        status: np.ndarray | None = None,
    ) -> int:
        """One numeric series from arrays (imports, the simulator's history): ts [µs], values, status."""
        self._check_writable()
        ts = np.asarray(ts_us, dtype=np.int64).tolist()
        vals = np.asarray(values, dtype=np.float64).tolist()
        st = None if status is None else np.asarray(status, dtype=np.int64).tolist()
        return self._write_encoded(self._encoder.encode_arrays(series, ts, vals, st))

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the InfluxDB store at {self.url} was opened read-only")

    def _write_encoded(self, enc: Encoded) -> int:
        if enc.refused:
            self._count("refused", len(enc.refused))
            series, ts_us, why = enc.refused[0]
            self._log_limited(
                "refused",
                "InfluxDB store: %d sample(s) cannot be written as line protocol and are dropped (counted); "
                "first: series %r at %s: %s",
                len(enc.refused),
                series,
                from_us(ts_us).isoformat(),
                why,
            )
        if enc.nonfinite:
            self._count("nonfinite", enc.nonfinite)
        written = 0
        lines = enc.lines
        for i in range(0, len(lines), self.batch_lines):
            written += self._send(lines[i : i + self.batch_lines])
        return written

    def _send(self, lines: list[str]) -> int:
        """Write one batch, retrying transient failures; split it when the server rejects its data."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                self._post("\n".join(lines))
            except _RejectedError as exc:
                if len(lines) == 1:
                    self._count("rejected", 1)
                    self._log_limited(
                        "rejected", "InfluxDB rejected a point (counted, not retried): %s: %s", lines[0], exc
                    )
                    return 0
                mid = len(lines) // 2
                return self._send(lines[:mid]) + self._send(lines[mid:])
            except _RefusedError as exc:
                self._fail(str(exc))
            except _TransientError as exc:
                wait = exc.retry_after if exc.retry_after is not None else delay
                if time.monotonic() + wait > deadline:
                    self._fail(
                        f"InfluxDB at {self.url} did not accept a write within {self.retry_s:g} s ({exc}); "
                        "the samples stay in the spool and are written when it answers"
                    )
                self._count("retries", 1)
                self._sleep(wait)
                delay = min(delay * 2, 5.0)
            else:
                self._count("written", len(lines))
                return len(lines)

    def _fail(self, message: str) -> None:
        self._count("failed_writes", 1)
        with self._lock:
            self._last_error = message
        raise StoreError(message)

    def _post(self, body: str) -> None:
        from influxdb_client.domain.write_precision import WritePrecision

        try:
            self._write_api.write(
                bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.US
            )
        except Exception as exc:
            raise self._classify(exc) from None

    def _classify(self, exc: Exception) -> Exception:
        """The failure of a request as a _RejectedError, _RefusedError or _TransientError to raise."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            message = _server_message(exc)
            if status in _REJECTED_STATUS:
                return _RejectedError(f"{status} {message}")
            if status in (401, 403):
                return _RefusedError(
                    f"InfluxDB at {self.url} refused the token ({status} {message}): check that it is "
                    f"valid and may write to bucket {self.bucket!r} of org {self.org!r}"
                )
            if status == 404:
                return _RefusedError(
                    f"InfluxDB at {self.url} has no bucket {self.bucket!r} in org {self.org!r} "
                    f"({message}): create it (see the README, Deploy) or fix storage.influxdb"
                )
            if status in _TRANSIENT_STATUS or status >= 500 or status == 0:
                return _TransientError(f"{status} {message}", _retry_after(exc))
            return _RefusedError(f"InfluxDB at {self.url} answered {status} {message}")
        if isinstance(exc, HTTPError | OSError):
            return _TransientError(f"not reachable: {exc.__class__.__name__}: {exc}")
        return exc

    # -- reading ---------------------------------------------------------------------------------------
    def _query(self, query: str) -> list[flux.FluxTable]:
        try:
            response = self._query_api.query_raw(query, org=self.org, dialect=self._dialect)
            try:
                text = response.data.decode("utf-8")
            finally:
                response.release_conn()
        except Exception as exc:
            kind = self._classify(exc)
            if kind is exc:
                raise
            raise StoreError(f"InfluxDB query failed: {kind}") from None
        return flux.parse_annotated_csv(text)

    def read(self, series: str, start: datetime, end: datetime) -> SeriesData:
        t0, t1 = to_us(start), to_us(end)
        if t1 <= t0:
            return _empty(series)
        rows = list(
            flux.iter_rows(
                self._query(flux.read_query(self.bucket, self.measurement, series, t0, t1)),
                "_time",
                "value",
                "text",
                "status",
            )
        )
        if not rows:
            return _empty(series)
        ts = flux.rfc3339_to_us([r[0] or "" for r in rows])
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        status = np.array([int(r[3]) if r[3] else 0 for r in rows], dtype=np.int64)[order]
        if any(r[2] for r in rows):  # a text series (an empty text cell is an empty string)
            raw = [r[2] if r[2] else (float(r[1]) if r[1] else "") for r in rows]
            values: np.ndarray = np.array(raw, dtype=object)[order]
        else:
            values = np.array([float(r[1]) if r[1] else math.nan for r in rows], dtype=np.float64)[order]
        return SeriesData(series, ts, values, status)

    def read_buckets(self, series: str, start: datetime, end: datetime, n: int) -> Buckets:
        t0, t1 = to_us(start), to_us(end)
        flux.bucket_width_us(t0, t1, n)  # ValueError for n <= 0, before any query
        if t1 <= t0:
            return _no_buckets(series)
        tables = flux.tables_by_result(
            self._query(flux.buckets_query(self.bucket, self.measurement, series, t0, t1, n))
        )
        columns: dict[str, dict[int, str]] = {}
        for name in flux.AGGREGATES:
            got = list(flux.iter_rows(tables.get(name, []), "_time", "_value"))
            starts = flux.rfc3339_to_us([t or "" for t, _ in got])
            columns[name] = {int(s): v or "" for s, (_, v) in zip(starts, got, strict=True)}
        keys = sorted(k for k, v in columns["count"].items() if v and int(v) > 0)
        return Buckets(
            series=series,
            start=np.array(keys, dtype=np.int64),
            t_first=np.array([int(columns["t_first"][k]) // 1000 for k in keys], dtype=np.int64),
            t_last=np.array([int(columns["t_last"][k]) // 1000 for k in keys], dtype=np.int64),
            min=np.array([float(columns["min"][k]) for k in keys], dtype=np.float64),
            max=np.array([float(columns["max"][k]) for k in keys], dtype=np.float64),
            mean=np.array([float(columns["mean"][k]) for k in keys], dtype=np.float64),
            count=np.array([int(columns["count"][k]) for k in keys], dtype=np.int64),
        )

    def latest(self, series: Sequence[str] | None = None) -> dict[str, Latest]:
        """Newest sample per series. InfluxDB keeps no arrival time, so `received` is None (the dashboard
        then ages a value by its source time)."""
        if series is not None and len(series) == 0:
            return {}
        wanted = None if series is None else list(dict.fromkeys(series))
        ask = wanted if wanted is not None and len(wanted) <= 200 else None  # else filter here
        tables = self._query(flux.latest_query(self.bucket, self.measurement, ask))
        per: dict[str, dict[str, tuple[int, str]]] = {}
        got = list(flux.iter_rows(tables, "series", "_field", "_time", "_value"))
        times = flux.rfc3339_to_us([r[2] or "" for r in got])
        for (name, fieldname, _, value), t in zip(got, times, strict=True):
            if name is None or fieldname is None:
                continue
            per.setdefault(name, {})[fieldname] = (int(t), value or "")
        out: dict[str, Latest] = {}
        keep = None if wanted is None else set(wanted)
        for name, fields in per.items():
            if (keep is not None and name not in keep) or "status" not in fields:
                continue
            t, status = fields["status"]
            value: float | str | None = None
            if "text" in fields and fields["text"][0] == t:
                value = fields["text"][1]
            elif "value" in fields and fields["value"][0] == t:
                value = float(fields["value"][1])
            server = fields.get("server_us")
            server_ts = from_us(int(server[1])) if server is not None and server[0] == t else None
            out[name] = Latest(Sample(name, from_us(t), value, int(status), server_ts), None)
        return out

    def list_series(self) -> list[str]:
        tables = self._query(flux.series_query(self.bucket, self.measurement))
        return sorted({v for (v,) in flux.iter_rows(tables, "_value") if v})

    def count(self, series: str, start: datetime | None = None, end: datetime | None = None) -> int:
        t0 = to_us(start) if start is not None else flux.MIN_US
        t1 = to_us(end) if end is not None else flux.MAX_US
        if t1 <= t0:
            return 0
        tables = self._query(flux.count_query(self.bucket, self.measurement, series, t0, t1))
        return sum(int(v) for (v,) in flux.iter_rows(tables, "_value") if v)

    # -- state -----------------------------------------------------------------------------------------
    def ping(self) -> bool:
        """Whether the server answers its health endpoint."""
        try:
            return bool(self._client.ping())
        except Exception:  # ping() itself answers False on most failures
            return False

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._stats, "last_error": self._last_error}

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._stats[key] += n

    def _log_limited(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_log.get(key, -math.inf) < _LOG_EVERY_S:
                return
            self._last_log[key] = now
        log.warning(message, *args)

    def close(self) -> None:
        self._write_api.close()
        self._client.close()


def _server_message(exc: Any) -> str:
    """The 'message' of an InfluxDB error body (JSON), else its reason."""
    import json

    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            return body.strip()[:300]
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])[:300]
    return str(getattr(exc, "reason", "") or "")


def _retry_after(exc: Any) -> float | None:
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        return min(max(float(value), 0.0), 30.0) if value is not None else None
    except ValueError:
        return None


def _empty(series: str) -> SeriesData:
    return SeriesData(series, np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))


def _no_buckets(series: str) -> Buckets:
    e_i, e_f = np.empty(0, np.int64), np.empty(0, np.float64)
    return Buckets(series, e_i, e_i, e_i, e_f, e_f, e_f, e_i)
