"""The OPC UA collector: one server connection, its subscription, its whole life.

connect → resolve browse paths in the configured namespace (one request for all tags) → one subscription
with a monitored item per tag (trigger StatusValueTimestamp, so an unchanged value with a new source
timestamp still arrives; an absolute deadband where configured) → consume notifications. A heartbeat reads
the server's clock every second; two misses in a row mean the server is gone (detected within ~3 s). Then
the client is thrown away (asyncua's `connect()` can hang on a half-dead one) and a fresh one connects and
subscribes again from scratch. A closed connection (the server process died) is noticed at once. After a
loss the endpoint is probed every 0.25 s for 30 s, then with backoff up to 10 s, so values flow again
within a second of the server being back.

An outage is recorded as a gap (`events`, written to the health store by the runner) from the moment the
loss was observed, with the source times of the last value before it and the first after it. Each tag
whose node keeps no history gets a Bad_NoCommunication sample at that moment (never before: the values
before the loss were good), so no KPI integrates across the hole; after reconnecting, what a server with
history produced meanwhile is read back (HistoryRead). A value the server still holds from before the loss
(an unchanged batch id, say) arrives again when the subscription is made: it is stored again at the server's
time, after the marker, so the tag is not left bad until it next changes. A spool that stops taking samples
(full, or a disk fault) is an outage of its own: the session ends, and resumes with the same recovery when
the spool takes samples again. A tag whose node cannot be resolved or monitored is reported as failed, with
why, and skipped; it never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from biopilot.aio import wait_for_event
from biopilot.config import OpcUaServer, OpcUaSource, Tag
from biopilot.errors import SourceError
from biopilot.samples import BAD_NO_COMMUNICATION, Sample, is_bad, utcnow
from biopilot.secrets import read_secret
from collectors import decoders
from collectors.decoders import TimeWindow
from collectors.security import Pki, certificate_uri, check_client_certificate, check_server_certificate
from collectors.sink import Counts, GapEvent, SampleSink
from collectors.spool import SpoolError

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 1.5  # two misses in a row: a lost server is noticed within 5 s
HISTORY_END = datetime(9999, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
PROBE_S = 0.25  # after a loss, try to connect this often ...
PROBE_FOR_S = 30.0  # ... for this long, then back off
MAX_BACKOFF_S = 10.0


class ConnectionLostError(Exception):
    pass


class SpoolOutageError(Exception):
    """The spool stopped taking samples: end the session, resume when it takes them again."""


_CONNECTION_ERRORS = (ConnectionLostError, OSError, TimeoutError, ua.UaError, asyncio.IncompleteReadError)


class OpcUaCollector:
    def __init__(
        self,
        name: str,
        server: OpcUaServer,
        tags: list[Tag],
        sink: SampleSink,
        counts: Counts,
        window: TimeWindow | None = None,
        pki: Pki | None = None,
    ) -> None:
        self.name = name
        self.server = server
        self.tags = tags
        self.sink = sink
        self.counts = counts
        self.source = f"opcua:{name}"
        self.window = window or TimeWindow()
        self.connected = asyncio.Event()
        self.connects = 0
        self.last_heartbeat: datetime | None = None
        self.monitored: dict[str, str] = {}  # tag -> node id, of the current session
        self.failed: dict[str, str] = {}  # tag -> why it is not monitored
        self.events: list[GapEvent] = []  # drained by the runner into the health store
        self.backfilled = 0  # values recovered from the server's history after outages
        self._by_handle: dict[int, Tag] = {}
        self._nodes: dict[str, ua.NodeId] = {}
        self._last_ts: dict[str, datetime] = {}  # tag -> newest source timestamp stored
        self._lost_at: datetime | None = None
        self._first_miss_at: datetime | None = None  # when the heartbeat first failed (of this streak)
        self._historizing: set[str] = set()  # tags whose node keeps history (read at subscription)
        self._pending_markers: dict[str, datetime] = {}  # Bad_NoCommunication samples not yet spooled
        self._marked_at_loss: set[str] = set()  # tags given a marker at the current outage
        self._marked_at_gap: dict[str, datetime] = {}  # tag -> its marker, until a value comes after it
        self._awaiting_first = False  # back after a gap, its first value after not yet seen
        self._recovering = False
        self._first_after: datetime | None = None
        self._last_warning = 0.0  # monotonic time of the last "cannot connect" warning
        self.pki = pki
        self.last_error: str | None = None
        self.last_received: float | None = None  # wall clock of the newest notification
        self.last_spooled: float | None = None  # wall clock of the newest sample spooled
        self.spool_error: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failing_since: float | None = None  # monotonic time of the first failure of the current streak
        delay = PROBE_S
        while not stop.is_set():
            if self.spool_error is not None or self._spool_refuses():
                await self._wait_for_spool(stop)
                continue
            try:
                await self._session(stop)
                failing_since, delay = None, PROBE_S
                continue
            except SpoolOutageError as exc:
                self._lost(f"the spool stopped taking samples: {exc}", 0.0)
                continue
            except SourceError as exc:  # configuration or trust: say what to fix, keep trying slowly
                self.last_error = str(exc)
                log.error("%s: %s (retrying in %.0f s)", self.source, exc, max(delay, 5.0))
                self._lost(exc, delay, quiet=True)
                await wait_for_event(stop, max(delay, 5.0))
                delay = min(max(delay * 2, 5.0), 30.0)
                continue
            except ua.UaStatusCodeError as exc:
                why = explain(exc, self.server, self.pki)
                self.last_error = why
            except AssertionError as exc:
                # asyncua asserts when the server answers OpenSecureChannel with a bad status (a peer that
                # refuses our certificate: BadSecurityChecksFailed); a bare assert says nothing, so say it
                why = refused_channel(exc, self.server, self.pki)
                self.last_error = why
            except _CONNECTION_ERRORS as exc:
                why = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug or an unexpected server answer: report it, never die
                log.exception("%s: unexpected error; reconnecting", self.source)
                why = f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            if failing_since is None or self.connected.is_set():
                failing_since, delay = now, PROBE_S
            elif now - failing_since > PROBE_FOR_S:
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF_S)
            self._lost(why, delay)
            await wait_for_event(stop, delay)
        self.connected.clear()

    def _spool_refuses(self) -> bool:
        spool = self.sink.spool
        return spool is not None and spool.error is not None

    async def _wait_for_spool(self, stop: asyncio.Event) -> None:
        """Wait until the spool takes samples again (a write error gone, room below half its size)."""
        spool = self.sink.spool
        while not stop.is_set():
            why = spool.probe() if spool is not None else None
            if why is None and spool is not None:
                spool.refresh()
                if spool.fill > 0.5:
                    why = f"spool {spool.directory} is {100 * spool.fill:.0f} % full"
            if why is None:
                if self.spool_error is not None:
                    log.warning("%s: the spool takes samples again; reconnecting", self.source)
                self.spool_error = None
                return
            self.spool_error = why
            await wait_for_event(stop, 0.5)

    def _lost(self, why: object, delay: float, *, quiet: bool = False) -> None:
        if self.connected.is_set():
            log.warning("%s: connection lost (%s); reconnecting", self.source, why)
            self._lost_at = self._first_miss_at or utcnow()
            last = max(self._last_ts.values(), default=None)
            self.events.append(
                GapEvent(
                    self.source, lost=self._lost_at, last_ts_before=last, reason=f"connection lost: {why}"
                )
            )
            self._mark_lost(
                [
                    name
                    for name in self._nodes
                    if name not in self._historizing or not self.server.history_backfill
                ]
            )
        elif not quiet:
            now = time.monotonic()
            level = logging.WARNING if now - self._last_warning > 30 else logging.DEBUG
            if level == logging.WARNING:
                self._last_warning = now
            log.log(
                level,
                "%s: cannot connect to %s (%s); retrying in %.2f s",
                self.source,
                self.server.endpoint,
                why,
                delay,
            )
        self._first_miss_at = None
        self.connected.clear()

    def _mark_lost(self, tags: list[str]) -> None:
        """A Bad_NoCommunication sample for each tag at the loss (never before its last value); kept for
        later if the spool does not take it now."""
        assert self._lost_at is not None
        for name in tags:
            last = self._last_ts.get(name)
            if last is None:
                continue
            self._pending_markers[name] = self._lost_at if self._lost_at > last else last + ONE_US
            self._marked_at_loss.add(name)
        self._flush_markers()

    def _flush_markers(self) -> bool:
        if not self._pending_markers:
            return True
        markers = [Sample(name, ts, None, BAD_NO_COMMUNICATION) for name, ts in self._pending_markers.items()]
        try:
            self.sink.put(markers)
        except SpoolError as exc:
            self.spool_error = str(exc)
            return False
        self.last_spooled = time.time()
        self._marked_at_gap.update(self._pending_markers)
        for name, ts in self._pending_markers.items():
            self._last_ts[name] = max(self._last_ts.get(name, ts), ts)
        self._pending_markers.clear()
        return True

    async def _session(self, stop: asyncio.Event) -> None:
        client = await self._client()
        try:
            await asyncio.wait_for(client.connect(), timeout=10)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2)
            raise
        self.last_error = None
        try:
            sub = await self._subscribe(client)
            self.connects += 1
            self.connected.set()
            log.info(
                "%s: connected to %s, %d tags monitored, %d failed",
                self.source,
                self.server.endpoint,
                len(self.monitored),
                len(self.failed),
            )
            if self._lost_at is not None:
                await self._recover(client)
            if not self._flush_markers():
                raise SpoolOutageError(self.spool_error)
            consumer = asyncio.create_task(self._consume(sub))
            heartbeat = asyncio.create_task(self._heartbeat(client))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({consumer, heartbeat, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (consumer, heartbeat, stopper):
                task.cancel()
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2)

    async def _client(self) -> Client:
        return await make_client(self.name, self.server, self.pki)

    async def _recover(self, client: Client) -> None:
        """After an outage: read what the server produced meanwhile from its history, or mark the hole."""
        assert self._lost_at is not None
        recovered, unrecoverable = 0, []
        self._awaiting_first, self._recovering, self._first_after = True, True, None
        for tag_name, node_id in self._nodes.items():
            last = self._last_ts.get(tag_name)
            if last is None or tag_name in self._marked_at_loss:
                continue
            values = (
                await self._history(client, node_id, last + ONE_US) if self.server.history_backfill else None
            )
            if values is None:
                unrecoverable.append(tag_name)
                continue
            tag = next(t for t in self.tags if t.name == tag_name)
            for dv in values:
                recovered += self._accept(tag, dv)
        if unrecoverable:
            self._mark_lost(unrecoverable)  # history was expected but is not there: the hole is marked now
        marked = len(self._marked_at_loss)
        self._marked_at_loss.clear()
        self.backfilled += recovered
        how = f"{recovered} values read back from the server's history"
        if marked:
            how += f"; {marked} tags without history marked Bad_NoCommunication at the loss"
        log.info("%s: back after %.1f s; %s", self.source, (utcnow() - self._lost_at).total_seconds(), how)
        self.events.append(GapEvent(self.source, back=utcnow(), first_ts_after=self._first_after, reason=how))
        self._recovering = False
        self._lost_at = None

    async def _history(
        self, client: Client, node_id: ua.NodeId, start: datetime
    ) -> list[ua.DataValue] | None:
        """Raw history of a node from `start` on; None when the server keeps none for it."""
        node = client.get_node(node_id)
        try:
            historizing = await node.read_attribute(ua.AttributeIds.Historizing)
            if not historizing.Value.Value:
                return None
            return await node.read_raw_history(start, HISTORY_END, 0, return_bounds=False)
        except ua.UaStatusCodeError as exc:
            log.debug("%s: no history for %s: %s", self.source, node_id.to_string(), exc)
            return None

    async def _subscribe(self, client: Client) -> Subscription:
        self.monitored.clear()
        self.failed.clear()
        self._nodes = {}
        nodes = await self._resolve(client)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.server.publishing_interval_ms,
            RequestedLifetimeCount=300,
            RequestedMaxKeepAliveCount=max(1, int(2000 / self.server.publishing_interval_ms)),
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        # Iterator mode with an unbounded queue: the bounded default drops notifications silently.
        sub = await client.create_subscription(params, handler=None, queue_maxsize=0)
        requests, order = [], []
        for handle, (tag, node_id) in enumerate(nodes.items(), start=1000):
            data_filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
            if self.server.deadband > 0 and not tag.is_text:
                data_filter.DeadbandType = 1  # absolute
                data_filter.DeadbandValue = self.server.deadband
            mp = ua.MonitoringParameters(
                ClientHandle=handle,
                SamplingInterval=float(self.server.sampling_interval_ms),
                QueueSize=self.server.queue_size,
                DiscardOldest=True,
                Filter=data_filter,
            )
            requests.append(
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=mp,
                )
            )
            order.append((handle, tag, node_id))
        self._by_handle.clear()
        for start in range(0, len(requests), 1000):
            results = await sub.create_monitored_items(requests[start : start + 1000])
            for (handle, tag, node_id), result in zip(order[start : start + 1000], results, strict=True):
                if isinstance(result, ua.StatusCode):
                    self.failed[tag.name] = f"cannot monitor {node_id.to_string()}: {result.name}"
                    self.counts.reject(self.source, "monitor_failed", f"{tag.name}: {self.failed[tag.name]}")
                else:
                    self._by_handle[handle] = tag
                    self.monitored[tag.name] = node_id.to_string()
                    self._nodes[tag.name] = node_id
        self._historizing = await self._keeps_history(client) if self.server.history_backfill else set()
        return sub

    async def _keeps_history(self, client: Client) -> set[str]:
        """The monitored tags whose node keeps history (its Historizing attribute), in one request."""
        names = list(self._nodes)
        try:
            values = await client.read_attributes(
                [client.get_node(self._nodes[n]) for n in names], ua.AttributeIds.Historizing
            )
        except ua.UaError:
            return set()
        return {n for n, dv in zip(names, values, strict=True) if dv.StatusCode.is_good() and dv.Value.Value}

    async def _resolve(self, client: Client) -> dict[Tag, ua.NodeId]:
        """Node ids of the tags: node_id as given, browse paths translated in one request."""
        out: dict[Tag, ua.NodeId] = {}
        by_path: list[tuple[Tag, str]] = []
        for tag in self.tags:
            src = tag.source
            assert isinstance(src, OpcUaSource)
            if src.node_id is not None:
                try:
                    out[tag] = ua.NodeId.from_string(src.node_id)
                except (ValueError, ua.UaError) as exc:
                    self.failed[tag.name] = f"invalid node id {src.node_id!r}: {exc}"
            else:
                assert src.browse_path is not None
                by_path.append((tag, src.browse_path))
        if by_path:
            try:
                ns = await client.get_namespace_index(self.server.namespace or "")
            except ValueError:
                for tag, _ in by_path:
                    self.failed[tag.name] = f"the server has no namespace {self.server.namespace!r}"
                by_path = []
            for start in range(0, len(by_path), 500):
                chunk = by_path[start : start + 500]
                results = await client.uaclient.translate_browsepaths_to_nodeids(
                    [_browse_path(ns, path) for _, path in chunk]
                )
                for (tag, path), result in zip(chunk, results, strict=True):
                    if result.StatusCode.is_good() and result.Targets:
                        target = result.Targets[0].TargetId
                        out[tag] = ua.NodeId(target.Identifier, target.NamespaceIndex)
                    else:
                        self.failed[tag.name] = f"browse path {path!r} not found ({result.StatusCode.name})"
        for name, why in self.failed.items():
            self.counts.reject(self.source, "unresolved_node", f"{name}: {why}")
        return out

    async def _consume(self, sub: Subscription) -> None:
        async for event in sub:
            data = getattr(event, "data", None)
            if data is None:
                continue
            tag = self._by_handle.get(data.monitored_item.ClientHandle)
            if tag is None:
                continue
            self.last_received = time.time()
            self._accept(tag, data.monitored_item.Value)

    def _accept(self, tag: Tag, dv: ua.DataValue) -> int:
        """Turn a DataValue into a sample and hand it to the sink; 1 if it was taken, else 0.
        SpoolOutageError when the spool does not take it."""
        raw = dv.Value.Value if dv.Value is not None else None
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        ts = dv.SourceTimestamp or dv.ServerTimestamp or utcnow()
        wrong_time = self.window.check(ts, utcnow())
        if wrong_time is not None:
            self.counts.reject(self.source, wrong_time.reason, f"{tag.name}: {wrong_time.detail}", tag.name)
            return 0
        if tag.is_text:
            value: float | str | None = raw if isinstance(raw, str) else (None if raw is None else str(raw))
        elif isinstance(raw, bool):
            value = 1.0 if raw else 0.0
        elif not isinstance(raw, int | float):
            if raw is None and is_bad(status):
                value = None  # a bad value without a value: keep the status
            else:
                self.counts.reject(self.source, "wrong_type", f"{tag.name}: {type(raw).__name__}", tag.name)
                return 0
        else:
            value = float(raw)
            if decoders.rounded(raw, value):
                self.counts.add(self.source, "rounded_integer")
        previous = self._last_ts.get(tag.name)
        marker = self._marked_at_gap.get(tag.name)
        if marker is not None and ts <= marker:
            # the value from before the loss, delivered again on subscribing: still current, so it is stored
            # again when we got it back (the server's time if it read it after the loss), after the marker
            server_ts = dv.ServerTimestamp
            ts = server_ts if server_ts is not None and server_ts > marker else max(utcnow(), marker + ONE_US)
        try:
            self.sink.put((Sample(tag.name, ts, value, status, dv.ServerTimestamp),))
        except SpoolError as exc:
            self.counts.reject(self.source, "spool_refused", str(exc), tag.name)
            self.spool_error = str(exc)
            raise SpoolOutageError(str(exc)) from None
        self.last_spooled = time.time()
        self.counts.add(self.source, "values")
        self._marked_at_gap.pop(tag.name, None)
        if previous is None or ts > previous:
            self._last_ts[tag.name] = ts
            if self._awaiting_first:
                self._awaiting_first = False
                if self._recovering:  # the gap closes with it (in _recover)
                    self._first_after = ts
                else:
                    self.events.append(GapEvent(self.source, first_ts_after=ts))
        return 1

    async def _heartbeat(self, client: Client) -> None:
        """Read the server's clock every second; two failures in a row (or a closed connection) mean the
        server is gone. The first failure's time is the loss time of the gap."""
        node = client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
        closed = asyncio.Event()
        protocol = getattr(client.uaclient, "protocol", None)
        if protocol is not None and hasattr(protocol, "on_connection_lost"):
            protocol.on_connection_lost = lambda exc: closed.set()
        misses = 0
        while True:
            if await wait_for_event(closed, HEARTBEAT_S):
                self._first_miss_at = self._first_miss_at or utcnow()
                raise ConnectionLostError("the server closed the connection")
            try:
                await asyncio.wait_for(node.read_value(), timeout=HEARTBEAT_TIMEOUT_S)
                misses = 0
                self._first_miss_at = None
                self.last_heartbeat = utcnow()
            except ConnectionError as exc:
                self._first_miss_at = self._first_miss_at or utcnow()
                raise ConnectionLostError(f"the connection is closed ({exc})") from exc
            except (TimeoutError, OSError, ua.UaError) as exc:
                self._first_miss_at = self._first_miss_at or utcnow()
                misses += 1
                if misses >= 2:
                    raise ConnectionLostError(f"heartbeat failed twice ({type(exc).__name__})") from exc


def _browse_path(ns: int, path: str) -> ua.BrowsePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
            IsInverse=False,
            IncludeSubtypes=True,
            TargetName=ua.QualifiedName(part, ns),
        )
        for part in path.strip("/").split("/")
    ]
    return ua.BrowsePath(
        StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder), RelativePath=ua.RelativePath(elements)
    )


def first_certificate(data: bytes) -> bytes:
    """The first DER certificate of a chain (an endpoint may carry the server's certificate chain)."""
    if len(data) < 4 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    n = first & 0x7F
    length = int.from_bytes(data[2 : 2 + n], "big")
    return data[: 2 + n + length]


_REFUSALS = {
    "BadSecurityChecksFailed": "refused our client certificate {cert}: trust it on the server "
    "(copy it into the server's trusted certificates)",
    "BadCertificateUntrusted": "does not trust our client certificate {cert}: trust it on the server",
    "BadCertificateInvalid": "finds our client certificate {cert} invalid: "
    "renew it with `biopilot certs create --force`",
    "BadIdentityTokenRejected": "rejected the user {user}: check the user name and the password in ${env}",
    "BadIdentityTokenInvalid": "rejected the user {user}: check the user name and the password in ${env}",
    "BadUserAccessDenied": "denied access to the user {user}: check the user name and the password in ${env}",
}


def explain(exc: ua.UaStatusCodeError, server: OpcUaServer, pki: Pki | None) -> str:
    """A refusal by the server in words that name the certificate or the user and the fix."""
    name = type(exc).__name__
    template = _REFUSALS.get(name)
    if template is None:
        return f"{server.endpoint} answered {name}"
    return f"{server.endpoint} " + template.format(
        cert=pki.cert if pki is not None else "(none)",
        user=repr(server.username),
        env=server.password_env or "?",
    )


def refused_channel(exc: AssertionError, server: OpcUaServer, pki: Pki | None) -> str:
    """asyncua's bare AssertionError from open_secure_channel, in words: the server answered our request
    for a secure channel with a bad status, which a server that refuses our certificate does."""
    if server.security_policy == "None":
        return f"{server.endpoint} refused to open a secure channel (no reason given; asyncua: {exc!r})"
    cert = pki.cert if pki is not None else "(none)"
    return (
        f"{server.endpoint} refused the secure channel, as a server does that does not trust our client "
        f"certificate {cert} (BadSecurityChecksFailed): trust it on the server (copy it into the server's "
        "trusted certificates; a server that keeps refused certificates, as node-opcua does in rejected/, "
        "has it there)"
    )


async def make_client(name: str, srv: OpcUaServer, pki: Pki | None) -> Client:
    """A fresh client with the configured identity and security, checked before connecting: the client
    certificate exists and is valid, the server offers the policy and mode, its certificate is trusted."""
    # timeout: creating thousands of monitored items takes a while. watchdog: asyncua's own probe of the
    # server state would otherwise give up after 1 s, which a busy server can exceed; our heartbeat decides.
    client = Client(srv.endpoint, timeout=15, watchdog_intervall=4.0)
    if srv.username is not None:
        client.set_user(srv.username)
        if srv.password_env is not None:
            password = read_secret(srv.password_env, what=f"opcua.servers.{name}.password_env")
            if password is None:
                raise SourceError(
                    f"opcua.servers.{name}.password_env: the environment variable {srv.password_env} "
                    f"(or {srv.password_env}_FILE) is not set "
                    f"(it holds the password of user {srv.username!r})"
                )
            client.set_password(password)
    if srv.security_policy == "None":
        return client
    if pki is None:
        raise SourceError(f"opcua.servers.{name}: security needs a data directory with a pki/ folder")
    check_client_certificate(pki)
    mode = getattr(ua.MessageSecurityMode, srv.security_mode)
    server_der = await _server_certificate(name, srv, mode)
    check_server_certificate(pki, server_der, srv.endpoint)
    client.application_uri = certificate_uri(pki) or client.application_uri
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key), server_certificate=server_der, mode=mode
    )
    return client


async def _server_certificate(name: str, srv: OpcUaServer, mode: ua.MessageSecurityMode) -> bytes:
    """The server's certificate from its endpoint for our policy and mode (asked without security)."""
    probe = Client(srv.endpoint, timeout=4)
    endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout=10)
    for ep in endpoints:
        if ep.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI and ep.SecurityMode == mode:
            return first_certificate(ep.ServerCertificate)
    offered = sorted(
        {f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints}
    )
    raise SourceError(
        f"{srv.endpoint} offers no Basic256Sha256/{mode.name} endpoint (it offers: {', '.join(offered)}); "
        f"set opcua.servers.{name}.security_policy and security_mode to one of those"
    )
