"""The OPC UA collector: one server connection, its subscription, its whole life.

connect → resolve browse paths in the configured namespace (one request for all tags) → one subscription
with a monitored item per tag (trigger StatusValueTimestamp, so an unchanged value with a new source
timestamp still arrives) → consume notifications → on loss (a heartbeat read of the server's clock fails)
throw the client away and start again with a fresh one, with backoff. A tag whose node cannot be resolved
or monitored is reported and skipped; it never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from biopilot.aio import wait_for_event
from biopilot.config import OpcUaServer, OpcUaSource, Tag
from biopilot.samples import Sample, utcnow
from collectors.sink import Counts, SampleSink

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 2.0


class ConnectionLostError(Exception):
    pass


_CONNECTION_ERRORS = (ConnectionLostError, OSError, TimeoutError, ua.UaError, asyncio.IncompleteReadError)


class OpcUaCollector:
    def __init__(
        self, name: str, server: OpcUaServer, tags: list[Tag], sink: SampleSink, counts: Counts
    ) -> None:
        self.name = name
        self.server = server
        self.tags = tags
        self.sink = sink
        self.counts = counts
        self.source = f"opcua:{name}"
        self.connected = asyncio.Event()
        self.connects = 0
        self.monitored: dict[str, str] = {}  # tag -> node id, of the current session
        self.failed: dict[str, str] = {}  # tag -> why it is not monitored
        self._by_handle: dict[int, Tag] = {}

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = 0.5
            except _CONNECTION_ERRORS as exc:
                if self.connected.is_set():
                    log.warning(
                        "%s: connection lost (%s); reconnecting", self.source, exc or type(exc).__name__
                    )
                else:
                    log.warning(
                        "%s: cannot connect to %s (%s); retrying in %.1f s",
                        self.source,
                        self.server.endpoint,
                        exc or type(exc).__name__,
                        delay,
                    )
                self.connected.clear()
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # a bug or an unexpected server answer: report it, never die
                log.exception("%s: unexpected error; reconnecting in %.1f s", self.source, delay)
                self.connected.clear()
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
        self.connected.clear()

    async def _session(self, stop: asyncio.Event) -> None:
        client = Client(self.server.endpoint, timeout=4)
        await asyncio.wait_for(client.connect(), timeout=10)
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

    async def _subscribe(self, client: Client) -> Subscription:
        self.monitored.clear()
        self.failed.clear()
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
        data_filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        requests, order = [], []
        for handle, (tag, node_id) in enumerate(nodes.items(), start=1000):
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

    def _accept(self, tag: Tag, dv: ua.DataValue) -> None:
        raw = dv.Value.Value if dv.Value is not None else None
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        ts = dv.SourceTimestamp or dv.ServerTimestamp or utcnow()
        if tag.is_text:
            value: float | str | None = raw if isinstance(raw, str) else (None if raw is None else str(raw))
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            if raw is None and status & 0x80000000:
                value = None  # a bad value without a value: keep the status
            else:
                self.counts.reject(self.source, "wrong_type", f"{tag.name}: {type(raw).__name__}")
                return
        else:
            value = float(raw)
        self.counts.add(self.source, "values")
        self.sink.put((Sample(tag.name, ts, value, status),))

    async def _heartbeat(self, client: Client) -> None:
        """Read the server's clock every second; two failures in a row mean the server is gone."""
        node = client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
        misses = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await asyncio.wait_for(node.read_value(), timeout=HEARTBEAT_TIMEOUT_S)
                misses = 0
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
