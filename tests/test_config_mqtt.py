"""MQTT sections of the site config: credentials, TLS files, payload formats and topic templates. Each
broken case differs from a good file by one defect and must fail with one line naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from biopilot.config import MqttSource, load_config, parse_config, template_filter
from biopilot.errors import ConfigError

GOOD = """
[site]
name = "mqtt"
[mqtt.brokers.plant]
host = "broker.plant"
username = "biopilot"
password_env = "BIOPILOT_MQTT_PASSWORD"
[mqtt.brokers.plant.templates.hall]
topic = "hall3/{equipment}/{signal}"
format = "number"
[mqtt.brokers.plant.templates.state]
topic = "site/+/{equipment}/state"
format = "json"
time_field = "time"
[[equipment]]
id = "F-1"
kind = "fermenter"
[[tags]]
name = "F-1.temperature"
equipment = "F-1"
role = "temperature"
unit = "degC"
[tags.source]
protocol = "mqtt"
broker = "plant"
topic = "lp/F-1"
format = "influx"
field = "temp"
measurement = "reactor"
match_tags = { unit = "F-1" }
precision = "ms"
[[tags]]
name = "F-1.ph"
equipment = "F-1"
role = "ph"
unit = "pH"
[tags.source]
protocol = "mqtt"
broker = "plant"
topic = "spBv1.0/hall3/DDATA/edge1/F-1"
format = "sparkplug"
metric = "Reactor/pH"
[[tags]]
name = "F-1.level"
equipment = "F-1"
role = "level"
unit = "%"
source = { protocol = "mqtt", broker = "plant", template = "hall", signal = "LT-101" }
[[tags]]
name = "F-1.batch_id"
equipment = "F-1"
role = "batch_id"
source = { protocol = "mqtt", broker = "plant", template = "state", signal = "batch" }
"""


def edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


def test_good_file_loads_with_every_format_and_templates() -> None:
    config = parse_config(GOOD)
    broker = config.mqtt.brokers["plant"]
    assert broker.port == 1883 and broker.tls is None
    assert broker.username == "biopilot" and broker.password_env == "BIOPILOT_MQTT_PASSWORD"
    assert template_filter(broker.templates["hall"].topic) == "hall3/+/+"
    assert template_filter(broker.templates["state"].topic) == "site/+/+/state"
    temperature = config.tag("F-1.temperature").source
    assert isinstance(temperature, MqttSource)
    assert (temperature.format, temperature.measurement, temperature.match_tags, temperature.precision) == (
        "influx",
        "reactor",
        {"unit": "F-1"},
        "ms",
    )
    level = config.tag("F-1.level").source
    assert isinstance(level, MqttSource) and level.topic is None and level.signal == "LT-101"


def _certs(directory: Path) -> tuple[Path, Path, Path]:
    from tests.collectors.tls_pki import Pki

    pki = Pki(directory)
    return pki.ca_pem, pki.client_pem, pki.client_key


def test_tls_files_relative_to_the_config_file_and_port_8883(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    ca, cert, key = _certs(tmp_path / "certs")
    path = tmp_path / "site.toml"
    path.write_text(
        edit(
            'password_env = "BIOPILOT_MQTT_PASSWORD"\n',
            'password_env = "BIOPILOT_MQTT_PASSWORD"\n'
            f'tls = {{ ca_file = "certs/{ca.name}", cert_file = "certs/{cert.name}", key_file = "{key}" }}\n',
        )
    )
    tls = load_config(path).mqtt.brokers["plant"].tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (str(ca), str(cert), str(key))
    assert load_config(path).mqtt.brokers["plant"].port == 8883  # the TLS port unless one is given
    path.write_text(path.read_text().replace('host = "broker.plant"', 'host = "broker.plant"\nport = 18883'))
    assert load_config(path).mqtt.brokers["plant"].port == 18883
    # an empty tls table: TLS with the system's CAs
    assert parse_config(edit('host = "broker.plant"\n', 'host = "b"\ntls = {}\n')).mqtt.brokers["plant"].tls


def _broken_tls(tmp_path: Path, tls: str) -> str:
    return edit('host = "broker.plant"\n', f'host = "broker.plant"\ntls = {{ {tls} }}\n')


def test_tls_problems_name_the_key_and_the_file(tmp_path: Path) -> None:
    ca, cert, key = _certs(tmp_path)
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("hello")
    cases = {
        f'ca_file = "{tmp_path}/missing-ca.pem"': [
            "mqtt.brokers.plant.tls.ca_file",
            "missing-ca.pem does not exist",
        ],
        f'ca_file = "{ca}", cert_file = "{tmp_path}/nope.pem"': ["tls.cert_file", "nope.pem does not exist"],
        f'ca_file = "{ca}", key_file = "{key}"': ["tls.key_file", "needs cert_file"],
        f'ca_file = "{not_pem}"': ["tls.ca_file", "not-a-cert.pem: not a PEM CA certificate"],
        f'cert_file = "{cert}", key_file = "{ca}"': ["tls.cert_file", str(cert), "not a PEM certificate"],
        "insecure = [1]": ["tls.insecure"],
        'ca = "x"': ["tls.ca", "unknown key"],
    }
    for tls, fragments in cases.items():
        path = tmp_path / "site.toml"
        path.write_text(_broken_tls(tmp_path, tls))
        with pytest.raises(ConfigError) as err:
            load_config(path)
            pytest.fail(f"{tls}: no error")
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        for fragment in fragments:
            assert fragment in message, (tls, message)


BROKEN: dict[str, tuple[str, list[str]]] = {
    "password_env_without_username": (
        edit('username = "biopilot"\n', ""),
        ["mqtt.brokers.plant.password_env: needs a username"],
    ),
    "password_in_password_env": (
        edit('password_env = "BIOPILOT_MQTT_PASSWORD"', 'password_env = "s3cret!pw"'),
        ["mqtt.brokers.plant.password_env", "not the password itself"],
    ),
    "format_key_of_another_format": (
        edit('format = "influx"\n', 'format = "influx"\ntime_field = "t"\n'),
        ["tags[0].source.time_field (tag 'F-1.temperature')", "not used by format 'influx'", "it uses field"],
    ),
    "number_with_a_field": (
        edit(
            'topic = "hall3/{equipment}/{signal}"\nformat = "number"',
            'topic = "hall3/{equipment}/{signal}"\nformat = "number"\nfield = "v"',
        ),
        ["mqtt.brokers.plant.templates.hall.field", "not used by format 'number'"],
    ),
    "unknown_format": (
        edit('format = "influx"', 'format = "influxdb"'),
        ["tags[0].source.format", "'json', 'number', 'influx' or 'sparkplug'"],
    ),
    "bad_precision": (
        edit('precision = "ms"', 'precision = "min"'),
        ["tags[0].source.precision"],
    ),
    "sparkplug_without_metric": (
        edit('metric = "Reactor/pH"\n', ""),
        ["tags[1].source.metric (tag 'F-1.ph')", "required by format 'sparkplug'"],
    ),
    "sparkplug_birth_topic": (
        edit("spBv1.0/hall3/DDATA/edge1/F-1", "spBv1.0/hall3/DBIRTH/edge1/F-1"),
        [
            "tags[1].source.topic (tag 'F-1.ph')",
            "needs a DATA topic",
            "spBv1.0/<group>/DDATA/<edge>/<device>",
        ],
    ),
    "sparkplug_node_topic_with_device": (
        edit("spBv1.0/hall3/DDATA/edge1/F-1", "spBv1.0/hall3/NDATA/edge1/F-1"),
        ["tags[1].source.topic", "needs a DATA topic"],
    ),
    "topic_and_template": (
        edit('template = "hall", signal = "LT-101"', 'topic = "x/y", template = "hall", signal = "LT-101"'),
        ["tags[2].source (tag 'F-1.level')", "give exactly one of topic or template"],
    ),
    "neither_topic_nor_template": (
        edit('template = "hall", signal = "LT-101"', 'signal = "LT-101"'),
        ["tags[2].source (tag 'F-1.level')", "give exactly one of topic or template"],
    ),
    "unknown_template": (
        edit('template = "hall", signal = "LT-101"', 'template = "hal", signal = "LT-101"'),
        ["tags[2].source.template (tag 'F-1.level')", "'hal' is not a template of broker 'plant'", "'hall'"],
    ),
    "template_without_signal": (
        edit('template = "hall", signal = "LT-101"', 'template = "hall"'),
        ["tags[2].source.signal", "required with a template"],
    ),
    "format_key_on_a_template_tag": (
        edit('template = "hall", signal = "LT-101"', 'template = "hall", signal = "LT-101", format = "json"'),
        ["tags[2].source.format", "set it on the template 'hall'"],
    ),
    "signal_with_a_slash": (
        edit('signal = "LT-101"', 'signal = "LT/101"'),
        ["tags[2].source.signal", "one topic segment"],
    ),
    "signal_without_template": (
        edit('topic = "lp/F-1"\n', 'topic = "lp/F-1"\nsignal = "x"\n'),
        ["tags[0].source.signal", "only with a template"],
    ),
    "template_without_equipment": (
        edit('topic = "hall3/{equipment}/{signal}"', 'topic = "hall3/F-1/{signal}"'),
        ["mqtt.brokers.plant.templates.hall.topic", "needs {equipment} once"],
    ),
    "template_with_hash": (
        edit('topic = "hall3/{equipment}/{signal}"', 'topic = "hall3/{equipment}/{signal}/#"'),
        ["templates.hall.topic", "segment '#'", "# is not allowed"],
    ),
    "template_placeholder_inside_a_segment": (
        edit('topic = "hall3/{equipment}/{signal}"', 'topic = "hall3/{equipment}/x-{signal}"'),
        ["templates.hall.topic", "segment 'x-{signal}'"],
    ),
    "overlapping_templates": (
        edit('topic = "site/+/{equipment}/state"', 'topic = "+/{equipment}/state"'),
        ["templates.state.topic", "overlaps template 'hall'"],
    ),
    "sparkplug_template": (
        edit('format = "json"\ntime_field = "time"', 'format = "sparkplug"\nmetric = "x"'),
        ["templates.state.format", "Sparkplug topics have their own layout"],
    ),
    "field_on_a_template_without_signal": (
        edit('time_field = "time"', 'time_field = "time"\nfield = "v"'),
        ["templates.state.field", "a tag's signal is the field"],
    ),
    "same_signal_twice": (
        edit('template = "state", signal = "batch"', 'template = "hall", signal = "LT-101"'),
        ["tags[3].source.signal (tag 'F-1.batch_id')", "'LT-101' of 'F-1' is also tag 'F-1.level'"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_mqtt_config_is_one_line_naming_file_and_key(case: str) -> None:
    text, fragments = BROKEN[case]
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.toml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("site.toml: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
