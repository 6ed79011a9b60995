"""Jobs, sinks and templates in config: errors name the field path and the allowed values; templates are sandboxed."""

from __future__ import annotations

import pytest

from tiergate.config.job_templates import TemplateFailed, render
from tiergate.config.loading import config_from_dict
from tiergate.core.errors import ConfigError

BASE = {"auth": {"master_key": "k"}}
JOB = {"name": "morning-brief", "schedule": "0 7 * * 1-5", "prompt": "Summarise: {{ inputs.alerts }}"}


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({**BASE, **raw})
    return exc.value.message


def test_the_issue_example_loads():
    cfg = config_from_dict(
        {
            **BASE,
            "alerts": [
                {"type": "telegram", "bot_token": "t", "chat_id": 1},
                {"type": "slack", "url": "https://hooks.slack.test/services/x"},
            ],
            "jobs": [
                {
                    **JOB,
                    "task": "summarization",
                    "model": "auto",
                    "inputs": {"alerts": {"url": "http://127.0.0.1:9000/alerts.json"}},
                    "deliver": ["telegram", "slack"],
                    "retries": 2,
                    "timeout": "10m",
                }
            ],
        }
    )
    job = cfg.jobs[0]
    assert (job.timeout, job.retries, job.kind, job.agent_name) == (600.0, 2, "agent", "morning-brief")
    assert job.inputs["alerts"].url == "http://127.0.0.1:9000/alerts.json"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"jobs": [{**JOB, "schedule": "0 7 * *"}]},
            "jobs[0].schedule: invalid cron expression '0 7 * *': five fields",
        ),
        ({"jobs": [{**JOB, "schedule": "61 * * * *"}]}, "jobs[0].schedule: invalid cron expression"),
        ({"jobs": [{**JOB, "missed": "later"}]}, "jobs[0].missed: Input should be 'skip' or 'catch_up'"),
        ({"jobs": [{**JOB, "overlap": "queue"}]}, "jobs[0].overlap: Input should be 'skip' or 'allow'"),
        ({"jobs": [{**JOB, "deliver": ["pager"]}]}, "jobs[0].deliver[0]: unknown sink 'pager'; allowed values: none"),
        (
            {"jobs": [{**JOB, "deliver": ["mail"]}], "sinks": {"box": {"type": "file", "path": "/tmp/x"}}},
            "jobs[0].deliver[0]: unknown sink 'mail'; allowed values: box",
        ),
        ({"jobs": [{**JOB, "timeout": "ten minutes"}]}, "jobs[0].timeout: invalid duration 'ten minutes'"),
        ({"jobs": [{**JOB, "timezone": "Mars/Olympus"}]}, "jobs[0].timezone: unknown IANA timezone 'Mars/Olympus'"),
        ({"jobs": [{**JOB, "prompt": "{{ inputs.x "}]}, "jobs[0]: template syntax error on line 1"),
        ({"jobs": [{**JOB, "report": {}}]}, "give prompt (an agent job) or report (a scheduled report), not both"),
        ({"jobs": [{**JOB, "name": "bad name"}]}, "jobs[0].name: must be 1-64 letters"),
        ({"jobs": [JOB, JOB]}, "jobs[1].name: 'morning-brief' is the name of another job"),
        ({"jobs": [{**JOB, "colour": "red"}]}, "jobs[0].colour: unknown field; allowed fields: agent,"),
        ({"sinks": {"x": {"type": "pager"}}}, "sinks.x: Input tag 'pager' found using 'type' does not match any"),
        ({"sinks": {"x": {"type": "email", "host": "h", "from": "a@b", "to": ["nobody"]}}}, "not an e-mail address"),
        ({"sinks": {"x": {"type": "slack", "bot_token": "t"}}}, "channel: required with bot_token"),
        ({"scheduler": {"max_concurrent": 0}}, "scheduler.max_concurrent: Input should be greater than or equal to 1"),
        (
            {
                "jobs": [{**JOB, "model": "gpt-9"}],
                "deployments": [{"name": "d1", "model": "m"}],
                "aliases": {"fast": ["d1"]},
            },
            "jobs[0].model: 'gpt-9' names no deployment, upstream model, alias or model_map entry; "
            "allowed values: auto, task/<type>, d1, fast, m",
        ),
    ],
)
def test_errors_name_the_field_and_what_is_allowed(raw, expected):
    assert expected in problems(raw)


def test_two_alert_sinks_of_one_type_must_be_named():
    msg = problems(
        {
            "alerts": [{"type": "webhook", "url": "http://a.test/1"}, {"type": "webhook", "url": "http://a.test/2"}],
            "jobs": [{**JOB, "deliver": ["webhook"]}],
        }
    )
    assert "jobs[0].deliver[0]: 2 alert sinks have type 'webhook'; name one under sinks:" in msg


def test_a_secret_comes_from_the_environment_and_an_unset_one_names_its_field():
    sink = {"type": "email", "host": "h", "from": "a@b.test", "to": ["c@d.test"], "password": "env:SMTP_PW"}
    cfg = config_from_dict({**BASE, "sinks": {"mail": sink}}, env={"SMTP_PW": "hunter2"})
    assert cfg.sinks["mail"].password.get_secret_value() == "hunter2"  # type: ignore[union-attr]
    assert "hunter2" not in repr(cfg.sinks["mail"])
    with pytest.raises(ConfigError) as exc:
        config_from_dict({**BASE, "sinks": {"mail": sink}}, env={})
    assert "sinks.mail.password: environment variable SMTP_PW is not set" in exc.value.message


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("Summarise: {{ inputs.alerts }}", {"inputs": {"alerts": "disk full"}}, "Summarise: disk full"),
        (
            "{% for a in inputs.alerts %}- {{ a.title }}\n{% endfor %}",
            {"inputs": {"alerts": [{"title": "x"}]}},
            "- x\n",
        ),
        ("{{ inputs.alerts | length }}", {"inputs": {"alerts": [1, 2]}}, "2"),
        ("<b>{{ inputs.t }}</b>", {"inputs": {"t": "<script>"}}, "<b><script></b>"),  # a prompt: not escaped
    ],
)
def test_templates_render(template, context, expected):
    assert render(template, context) == expected


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{ inputs.missing }}", "UndefinedError"),  # a typo is an error, not an empty prompt
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),  # the sandbox
        ("{{ inputs.f.__globals__ }}", "SecurityError"),
        ("{% for i in range(10**6) %}xxxxxxxxxx{% endfor %}", "OverflowError"),  # range() is capped by the sandbox
        ("{{ 'x' * 2000000 }}", "limit"),
    ],
)
def test_templates_refuse_what_is_unsafe_or_unbounded(template, why):
    with pytest.raises(TemplateFailed) as exc:
        render(template, {"inputs": {"f": render}})
    assert why in str(exc.value)
