"""The OPC UA shell of the simulated plant: an asyncua server with a folder per equipment.

Each signal is a variable under Objects/<equipment>/<signal> in the simulator's namespace, with its
engineering unit, the status code and the source timestamp of the simulated clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from asyncua import Server, ua
from asyncua.server.history import HistoryStorageInterface

from biopilot.samples import BAD_WAITING_FOR_INITIAL_DATA, GOOD, utcnow

log = logging.getLogger(__name__)


class OpcUaPlantServer:
    """Serves simulated equipment over OPC UA. Use `async with`, then `publish`."""

    def __init__(
        self, endpoint: str, namespace: str, name: str = "BioPilot simulated plant", history: int = 20_000
    ) -> None:
        """history: values each variable keeps for HistoryRead (0: none), as a plant's server or historian
        would; a collector reads back from it what it missed during an outage."""
        self.endpoint = endpoint
        self.namespace = namespace
        self.history = history
        self._server = Server()
        self._name = name
        self._idx = 0
        self._nodes: dict[tuple[str, str], tuple[ua.NodeId, ua.VariantType]] = {}
        self._folders: dict[str, object] = {}
        self.published: Counter[str] = Counter()  # "F-101/Temperature" -> values written

    async def __aenter__(self) -> OpcUaPlantServer:
        await self._server.init()
        self._server.set_endpoint(self.endpoint)
        self._server.set_server_name(self._name)
        self._server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._idx = await self._server.register_namespace(self.namespace)
        return self

    async def add_equipment(self, equipment: str, signals: dict[str, tuple[str, str]], ts: datetime) -> None:
        """Create Objects/<equipment>/<signal> variables. signals: name -> (kind 'float'|'text', unit).

        Until the first sample, each variable holds Bad_WaitingForInitialData with source timestamp ts
        (served, so counted as published)."""
        folder = await self._server.nodes.objects.add_folder(self._idx, equipment)
        for signal, (kind, unit) in signals.items():
            vtype = ua.VariantType.String if kind == "text" else ua.VariantType.Double
            initial = "" if kind == "text" else 0.0
            node_id = ua.NodeId(f"{equipment}.{signal}", self._idx)
            var = await folder.add_variable(
                node_id, ua.QualifiedName(signal, self._idx), ua.Variant(initial, vtype)
            )
            if unit:
                eu = ua.EUInformation(
                    NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                    UnitId=-1,
                    DisplayName=ua.LocalizedText(unit),
                    Description=ua.LocalizedText(unit),
                )
                await var.add_property(  # the standard browse name 0:EngineeringUnits (OPC 10000-8, 5.6.3)
                    ua.NodeId(f"{equipment}.{signal}.EngineeringUnits", self._idx),
                    ua.QualifiedName("EngineeringUnits", 0),
                    eu,
                    datatype=ua.NodeId(ua.ObjectIds.EUInformation),
                )
            self._nodes[(equipment, signal)] = (var.nodeid, vtype)
            if self.history:
                await var.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(True))
                await var.set_attr_bit(ua.AttributeIds.AccessLevel, ua.AccessLevel.HistoryRead)
                await var.set_attr_bit(ua.AttributeIds.UserAccessLevel, ua.AccessLevel.HistoryRead)
                await self._history_storage().new_historized_node(var.nodeid, None, self.history)
        initial_values = {sig: ("" if kind == "text" else 0.0) for sig, (kind, _) in signals.items()}
        await self.publish(equipment, initial_values, ts, BAD_WAITING_FOR_INITIAL_DATA)

    async def start(self) -> None:
        await self._server.start()
        log.info("OPC UA simulator serving %s (namespace %s)", self.endpoint, self.namespace)

    async def publish(
        self, equipment: str, values: dict[str, float | str], ts: datetime, status: int = GOOD
    ) -> None:
        now = utcnow()
        for signal, value in values.items():
            entry = self._nodes.get((equipment, signal))
            if entry is None:
                continue
            node_id, vtype = entry
            dv = ua.DataValue(
                Value=ua.Variant(value, vtype),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=ts,
                ServerTimestamp=now,
            )
            await self._server.write_attribute_value(node_id, dv)
            if self.history:
                # every value written, changed or not (the server's own history only records changes)
                await self._history_storage().save_node_value(node_id, dv)
            self.published[f"{equipment}/{signal}"] += 1

    async def stop_serving(self) -> None:
        """Stop serving (the OPC UA restart fault): clients lose their connections and sessions; the
        address space is kept, as a plant server's configuration is."""
        await self._server.stop()
        log.info("OPC UA simulator stopped serving %s (fault)", self.endpoint)

    async def serve_again(self, ts: datetime, *, keep_values: bool = False) -> None:
        """Serve again after `stop_serving`, every variable at Bad_WaitingForInitialData (source time ts)
        until its next value, as a freshly started server (served, so counted as published); with
        keep_values, the values it held (a network outage or a gateway that keeps its values)."""
        await self._server.start()
        if keep_values:
            log.info("OPC UA simulator serving %s again, values kept", self.endpoint)
            return
        initial: dict[str, dict[str, float | str]] = {}
        for (equipment, signal), (_, vtype) in self._nodes.items():
            initial.setdefault(equipment, {})[signal] = "" if vtype == ua.VariantType.String else 0.0
        for equipment, values in initial.items():
            await self.publish(equipment, values, ts, BAD_WAITING_FOR_INITIAL_DATA)
        log.info("OPC UA simulator serving %s again", self.endpoint)

    def _history_storage(self) -> HistoryStorageInterface:
        return self._server.iserver.history_manager.storage

    async def __aexit__(self, *exc: object) -> None:
        await self._server.stop()
