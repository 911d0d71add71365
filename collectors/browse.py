"""Browse an OPC UA server's address space: every variable below Objects with its browse path, data type,
engineering unit and value, and a guess of the BioPilot role it plays (for writing tag blocks)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from asyncua import Client, Node, ua

from biopilot import units
from biopilot.config import ROLE_KINDS, Role

MAX_NODES = 50_000

# Keywords in a variable's name (lower case, separators removed) that suggest a role. First match wins.
_ROLE_HINTS: list[tuple[str, Role]] = [
    ("batchid", Role.BATCH_ID),
    ("batch", Role.BATCH_ID),
    ("phase", Role.PHASE),
    ("step", Role.PHASE),
    ("dissolvedoxygen", Role.DISSOLVED_OXYGEN),
    ("dissolvedo2", Role.DISSOLVED_OXYGEN),
    ("po2", Role.DISSOLVED_OXYGEN),
    ("offgaso2", Role.OFFGAS_O2),
    ("offgasco2", Role.OFFGAS_CO2),
    ("exhausto2", Role.OFFGAS_O2),
    ("exhaustco2", Role.OFFGAS_CO2),
    ("co2", Role.OFFGAS_CO2),
    ("o2", Role.OFFGAS_O2),
    ("temperature", Role.TEMPERATURE),
    ("temp", Role.TEMPERATURE),
    ("ph", Role.PH),
    ("agitat", Role.AGITATION_SPEED),
    ("stirrer", Role.AGITATION_SPEED),
    ("airflow", Role.AIR_FLOW),
    ("aeration", Role.AIR_FLOW),
    ("pressure", Role.PRESSURE),
    ("feed", Role.FEED_RATE),
    ("base", Role.BASE_FLOW),
    ("volume", Role.VOLUME),
    ("weight", Role.WEIGHT),
    ("level", Role.LEVEL),
    ("power", Role.POWER),
    ("energy", Role.ENERGY),
    ("coolingwater", Role.COOLING_WATER_FLOW),
    ("heatingwater", Role.HEATING_WATER_FLOW),
    ("steam", Role.STEAM_FLOW),
    ("discharge", Role.DISCHARGE_FLOW),
    ("harvest", Role.DISCHARGE_FLOW),
    ("bleed", Role.DISCHARGE_FLOW),
    ("acid", Role.ACID_FLOW),
    ("antifoam", Role.ANTIFOAM_FLOW),
    ("water", Role.WATER_FLOW),
    ("flow", Role.FLOW),
    ("speed", Role.SPEED),
    ("turbid", Role.TURBIDITY),
    ("conduct", Role.CONDUCTIVITY),
    ("concentration", Role.CONCENTRATION),
    ("titer", Role.TITER),
]


@dataclass(frozen=True)
class Variable:
    path: str  # browse names from below Objects, joined by "/"
    namespace: str  # namespace URI of the variable's browse name
    node_id: str
    data_type: str
    unit: str
    value: object

    def guess_role(self) -> Role | None:
        """The first role the name suggests whose unit fits (text roles need a text value)."""
        name = re.sub(r"[^a-z0-9]", "", self.path.rsplit("/", 1)[-1].lower())
        text = self.data_type in ("String", "LocalizedText")
        for hint, role in _ROLE_HINTS:
            if hint not in name:
                continue
            if role in (Role.BATCH_ID, Role.PHASE):
                if text:
                    return role
            elif not text and units.kind_of(self.unit, ROLE_KINDS[role]) is not None:
                return role  # else the unit says it is something else: "AgitatorPower" in kW is a power
        return None


async def browse_variables(client: Client, max_depth: int = 8) -> list[Variable]:
    """Every variable below the Objects folder (the server's own Server object is skipped)."""
    namespaces = await client.get_namespace_array()
    out: list[Variable] = []
    type_names: dict[str, str] = {}

    async def walk(node: Node, path: list[str], depth: int) -> None:
        if depth > max_depth or len(out) >= MAX_NODES:
            return
        children = await node.get_children(
            refs=ua.ObjectIds.HierarchicalReferences,
            nodeclassmask=ua.NodeClass.Object | ua.NodeClass.Variable,
        )
        for child in children:
            if child.nodeid.NamespaceIndex == 0:
                continue  # the standard address space (Server object and the like)
            name = await child.read_browse_name()
            node_class = await child.read_node_class()
            child_path = [*path, name.Name]
            if node_class == ua.NodeClass.Variable:
                out.append(
                    await _variable(client, child, child_path, namespaces[name.NamespaceIndex], type_names)
                )
            else:
                await walk(child, child_path, depth + 1)

    await walk(client.nodes.objects, [], 0)
    return out


async def _variable(
    client: Client, node: Node, path: list[str], namespace: str, type_names: dict[str, str]
) -> Variable:
    dt = await node.read_data_type()
    key = dt.to_string()
    if key not in type_names:
        try:
            type_names[key] = (await client.get_node(dt).read_browse_name()).Name
        except ua.UaError:
            type_names[key] = key
    unit = ""
    for prop in await node.get_properties():
        if (await prop.read_browse_name()).Name == "EngineeringUnits":
            eu = await prop.read_value()
            text = getattr(getattr(eu, "DisplayName", None), "Text", "") or ""
            unit = units.normalize(text)
    try:
        value = await node.read_value()
    except ua.UaError:
        value = None
    return Variable("/".join(path), namespace, node.nodeid.to_string(), type_names[key], unit, value)


def tag_blocks(variables: list[Variable], server: str, equipment: str | None = None) -> str:
    """[[tags]] blocks for a site config; a role that could not be guessed is left for the engineer."""
    lines: list[str] = []
    for v in variables:
        parts = v.path.split("/")
        eq = equipment or (parts[0] if len(parts) > 1 else "EQUIPMENT")
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", parts[-1])  # DissolvedOxygen → Dissolved_Oxygen
        leaf = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
        role = v.guess_role()
        lines += ["[[tags]]", f'name = "{eq}.{leaf}"', f'equipment = "{eq}"']
        if role is None:
            lines.append('role = "?"  # not recognised: choose one (biopilot check-config lists the roles)')
        else:
            lines.append(f'role = "{role.value}"  # guessed from the name and unit: check it')
        if v.unit and (role is None or role not in (Role.BATCH_ID, Role.PHASE)):
            lines.append(f'unit = "{v.unit}"')
        lines.append(f'source = {{ protocol = "opcua", server = "{server}", browse_path = "{v.path}" }}')
        lines.append("")
    return "\n".join(lines)
