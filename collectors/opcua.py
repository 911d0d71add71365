"""The OPC UA collector: one server connection, its subscription, its whole life.

connect → resolve browse paths in the configured namespace (one request for all tags) → one subscription
with a monitored item per tag (trigger StatusValueTimestamp, so an unchanged value with a new source
timestamp still arrives; an absolute deadband where configured) → consume notifications. A heartbeat reads
the server's clock every second; two misses in a row mean the server is gone (detected within ~3 s). Then
the client is thrown away (asyncua's `connect()` can hang on a half-dead one) and a fresh one connects,
with backoff, and subscribes again from scratch.

An outage is recorded as a gap (`events`, written to the health store by the runner). After reconnecting,
what the server produced meanwhile is read back from its history (HistoryRead) where the server keeps one;
where it does not, each tag gets a Bad_NoCommunication sample right after its last value, so no KPI
integrates across the hole. A tag whose node cannot be resolved or monitored is reported and skipped; it
never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from biopilot.aio import wait_for_event
from biopilot.config import OpcUaServer, OpcUaSource, Tag
from biopilot.errors import SourceError
from biopilot.samples import BAD_NO_COMMUNICATION, Sample, is_bad, utcnow
from biopilot.secrets import read_secret
from collectors.decoders import TimeWindow
from collectors.security import Pki, certificate_uri, check_client_certificate, check_server_certificate
from collectors.sink import Counts, SampleSink
from collectors.spool import SpoolFullError

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 1.5  # two misses in a row: a lost server is noticed within 5 s
HISTORY_END = datetime(9999, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


class ConnectionLostError(Exception):
    pass


_CONNECTION_ERRORS = (ConnectionLostError, OSError, TimeoutError, ua.UaError, asyncio.IncompleteReadError)


@dataclass(frozen=True)
class GapEvent:
    """A source went away (back is None) or came back (lost is None)."""

    source: str
    lost: datetime | None
    back: datetime | None
    last_ts_before: datetime | None
    reason: str


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
        self.pki = pki
        self.last_error: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = 0.5
            except SourceError as exc:  # configuration or trust: say what to fix, keep trying slowly
                self.last_error = str(exc)
                log.error("%s: %s (retrying in %.0f s)", self.source, exc, delay)
                self._lost(exc, delay, quiet=True)
                await wait_for_event(stop, delay)
                delay = min(max(delay * 2, 5.0), 30.0)
            except ua.UaStatusCodeError as exc:
                why = _explain(exc, self.server, self.pki)
                self.last_error = why
                self._lost(why, delay)
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
            except _CONNECTION_ERRORS as exc:
                self._lost(exc or type(exc).__name__, delay)
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # a bug or an unexpected server answer: report it, never die
                log.exception("%s: unexpected error; reconnecting in %.1f s", self.source, delay)
                self._lost(exc, delay)
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
        self.connected.clear()

    def _lost(self, why: object, delay: float, *, quiet: bool = False) -> None:
        if self.connected.is_set():
            log.warning("%s: connection lost (%s); reconnecting", self.source, why)
            self._lost_at = utcnow()
            last = max(self._last_ts.values(), default=None)
            self.events.append(GapEvent(self.source, self._lost_at, None, last, f"connection lost: {why}"))
        elif not quiet:
            log.warning(
                "%s: cannot connect to %s (%s); retrying in %.1f s",
                self.source,
                self.server.endpoint,
                why,
                delay,
            )
        self.connected.clear()

    async def _session(self, stop: asyncio.Event) -> None:
        client = await self._client()
        await asyncio.wait_for(client.connect(), timeout=10)
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
        for tag_name, node_id in self._nodes.items():
            last = self._last_ts.get(tag_name)
            if last is None:
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
            markers = [
                Sample(name, self._last_ts[name] + ONE_US, None, BAD_NO_COMMUNICATION)
                for name in unrecoverable
            ]
            self._put(markers)
        self.backfilled += recovered
        how = f"{recovered} values read back from the server's history"
        if unrecoverable:
            how += f"; {len(unrecoverable)} tags without history marked Bad_NoCommunication"
        log.info("%s: back after %.1f s; %s", self.source, (utcnow() - self._lost_at).total_seconds(), how)
        self.events.append(GapEvent(self.source, None, utcnow(), None, how))
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
        return sub

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
            self._accept(tag, data.monitored_item.Value)

    def _accept(self, tag: Tag, dv: ua.DataValue) -> int:
        """Turn a DataValue into a sample and hand it to the sink; 1 if it was taken, else 0."""
        raw = dv.Value.Value if dv.Value is not None else None
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        ts = dv.SourceTimestamp or dv.ServerTimestamp or utcnow()
        wrong_time = self.window.check(ts, utcnow())
        if wrong_time is not None:
            self.counts.reject(self.source, wrong_time.reason, f"{tag.name}: {wrong_time.detail}")
            return 0
        if tag.is_text:
            value: float | str | None = raw if isinstance(raw, str) else (None if raw is None else str(raw))
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            if raw is None and is_bad(status):
                value = None  # a bad value without a value: keep the status
            else:
                self.counts.reject(self.source, "wrong_type", f"{tag.name}: {type(raw).__name__}")
                return 0
        else:
            value = float(raw)
        if not self._put((Sample(tag.name, ts, value, status, dv.ServerTimestamp),)):
            return 0
        self.counts.add(self.source, "values")
        previous = self._last_ts.get(tag.name)
        if previous is None or ts > previous:
            self._last_ts[tag.name] = ts
        return 1

    def _put(self, samples: tuple[Sample, ...] | list[Sample]) -> bool:
        try:
            self.sink.put(samples)
        except SpoolFullError as exc:
            # An OPC UA server cannot be paused: what does not fit is dropped, loudly and counted.
            self.counts.reject(self.source, "dropped_spool_full", str(exc))
            return False
        return True

    async def _heartbeat(self, client: Client) -> None:
        """Read the server's clock every second; two failures in a row mean the server is gone."""
        node = client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
        misses = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await asyncio.wait_for(node.read_value(), timeout=HEARTBEAT_TIMEOUT_S)
                misses = 0
                self.last_heartbeat = utcnow()
            except (TimeoutError, OSError, ua.UaError, ConnectionError) as exc:
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


def _explain(exc: ua.UaStatusCodeError, server: OpcUaServer, pki: Pki | None) -> str:
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
