"""observability: its defaults, and errors that name the field and what it takes."""

from __future__ import annotations

import pytest

from tiergate.config.loading import config_from_dict
from tiergate.core.errors import ConfigError

BASE = {"auth": {"required": False}}


def test_defaults_are_text_logs_no_tracing():
    o = config_from_dict(BASE).observability
    assert (o.log_format, o.tracing, o.metrics.max_label_values) == ("text", None, 50)


def test_tracing_endpoint_from_the_environment():
    cfg = config_from_dict(
        {**BASE, "observability": {"tracing": {"endpoint": "env:OTLP_URL"}}},
        env={"OTLP_URL": "http://127.0.0.1:4318/v1/traces"},
    )
    assert cfg.observability.tracing is not None
    assert cfg.observability.tracing.endpoint == "http://127.0.0.1:4318/v1/traces"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"log_format": "xml"}, r"observability\.log_format: .*'text' or 'json'"),
        ({"tracing": {"endpoint": "127.0.0.1:4318"}}, r"observability\.tracing\.endpoint: .*http:// or https://"),
        ({"tracing": {"sample_ratio": 2}}, r"observability\.tracing\.sample_ratio: .*less than or equal to 1"),
        ({"metrics": {"max_label_values": 0}}, r"observability\.metrics\.max_label_values: .*greater than or equal"),
        (
            {"tracing": {"exporter": "zipkin"}},
            r"observability\.tracing\.exporter: unknown field; allowed fields: endpoint",
        ),
    ],
)
def test_errors_name_the_field(section, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BASE, "observability": section})
