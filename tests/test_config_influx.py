"""[storage] backend = "influxdb" and [storage.influxdb]: validated, one line per mistake."""

from __future__ import annotations

import pytest

from biopilot.config import parse_config
from biopilot.errors import ConfigError

BASE = '[site]\nname = "x"\n[[equipment]]\nid = "F-101"\nkind = "fermenter"\n'
INFLUX = (
    '[storage]\nbackend = "influxdb"\n[storage.influxdb]\nurl = "http://influxdb:8086"\norg = "plant"\n'
    'bucket = "biopilot"\ntoken_env = "INFLUXDB_TOKEN"\n'
)


def test_a_complete_section_loads_with_defaults() -> None:
    cfg = parse_config(BASE + INFLUX, "site.toml").storage
    assert cfg.backend == "influxdb" and cfg.influxdb is not None
    assert (cfg.influxdb.url, cfg.influxdb.org, cfg.influxdb.bucket) == (
        "http://influxdb:8086",
        "plant",
        "biopilot",
    )
    assert (cfg.influxdb.measurement, cfg.influxdb.batch_lines, cfg.influxdb.retry_s) == (
        "biopilot",
        5000,
        10.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[storage]\nbackend = "influxdb"\n',
            "site.toml: storage: backend 'influxdb' needs a [storage.influxdb] section with url, org, bucket",
        ),
        (
            INFLUX + 'token = "s3cr3t=="\n',
            "site.toml: storage.influxdb: do not write the API token in this file: put it in an environment "
            "variable",
        ),
        (
            INFLUX.replace('token_env = "INFLUXDB_TOKEN"', 'token_env = "abc-DEF=="'),
            "storage.influxdb.token_env: names the environment variable that holds the token",
        ),
        (
            INFLUX.replace("http://influxdb:8086", "influxdb:8086"),
            "storage.influxdb.url: an InfluxDB URL looks like 'http://influxdb:8086'",
        ),
        (
            INFLUX.replace("http://influxdb:8086", "http://u:p@influxdb:8086"),
            "storage.influxdb.url: the InfluxDB URL carries credentials",
        ),
        (INFLUX.replace('org = "plant"\n', ""), "storage.influxdb.org: missing (required)"),
        (INFLUX + 'measurement = "_internal"\n', "storage.influxdb.measurement: '_internal' is not a plain"),
        (INFLUX.replace('backend = "influxdb"', 'backend = "sqlite"'), "used only with backend = 'influxdb'"),
        ('[storage]\nbackend = "influx"\n', "storage.backend: Input should be 'sqlite' or 'influxdb'"),
    ],
)
def test_mistakes_get_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + text, "site.toml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)
