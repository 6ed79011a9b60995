"""Pure parts of delivery and the digest: each sink's payload, Telegram's 4096-character messages,
redaction, alert sinks reused by type, the budget forecast, and HTML that escapes client-supplied names."""

from __future__ import annotations

import orjson
import pytest
from pydantic import SecretStr, TypeAdapter

from tiergate.config.alerts import AlertSinkConfig
from tiergate.config.jobs import EmailSink, SinkConfig
from tiergate.jobs.delivery import (
    TELEGRAM_MAX_TEXT,
    Result,
    build_requests,
    chunks,
    email_message,
    file_name,
    redact,
    resolve_sinks,
    secrets_of,
)
from tiergate.jobs.digest import Digest, forecast, render_html, render_markdown
from tiergate.ledger.report import Group, Report

SINK = TypeAdapter(SinkConfig)
RESULT = Result(
    "brief", "r1", 1_800_000_000.0, "2027-01-15T09:00:00+01:00", "ok", "brief", "**hi**", "<p>hi</p>", "d", 0.5
)


@pytest.mark.parametrize(
    ("sink", "url", "payload", "headers"),
    [
        (
            {"type": "webhook", "url": "http://h.test/x", "headers": {"X-Auth": "s"}},
            "http://h.test/x",
            {
                "job": "brief",
                "run_id": "r1",
                "slot": 1_800_000_000.0,
                "slot_local": "2027-01-15T09:00:00+01:00",
                "status": "ok",
                "subject": "brief",
                "text": "**hi**",
                "format": "markdown",
                "deployment": "d",
                "cost_usd": 0.5,
            },
            {"X-Auth": "s", "Content-Type": "application/json"},
        ),
        (
            {"type": "slack", "url": "https://hooks.slack.test/services/T/B/X"},
            "https://hooks.slack.test/services/T/B/X",
            {"text": "*brief*\n**hi**"},
            {"Content-Type": "application/json"},
        ),
        (
            {"type": "slack", "bot_token": "xoxb-1", "channel": "C1"},
            "https://slack.com/api/chat.postMessage",
            {"channel": "C1", "text": "*brief*\n**hi**"},
            {"Content-Type": "application/json; charset=utf-8", "Authorization": "Bearer xoxb-1"},
        ),
        (
            {"type": "telegram", "bot_token": "1:abc", "chat_id": -100},
            "https://api.telegram.org/bot1:abc/sendMessage",
            {"chat_id": "-100", "text": "brief\n\n**hi**"},
            {"Content-Type": "application/json"},
        ),
    ],
)
def test_each_http_sink_gets_its_own_shape(sink, url, payload, headers):
    (call,) = build_requests(SINK.validate_python(sink), RESULT)
    assert (call.url, orjson.loads(call.body), call.headers) == (url, payload, headers)


def test_a_long_result_goes_to_telegram_as_several_messages_in_order():
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(200))  # ~20,000 characters
    long = Result("j", "r", 0.0, "", "ok", "subject", text, "", None, 0.0)
    calls = build_requests(SINK.validate_python({"type": "telegram", "bot_token": "1:a", "chat_id": 1}), long)
    parts = [orjson.loads(c.body)["text"] for c in calls]
    assert len(parts) > 4 and all(0 < len(p) <= TELEGRAM_MAX_TEXT for p in parts)
    assert "".join(parts) == f"subject\n\n{text}"


@pytest.mark.parametrize(
    ("text", "size", "expected"), [("", 5, [""]), ("abc", 5, ["abc"]), ("ab\ncdefgh", 5, ["ab\n", "cdefg", "h"])]
)
def test_chunks(text, size, expected):
    assert chunks(text, size) == expected


def test_secrets_of_each_sink_are_redacted():
    hook = SINK.validate_python({"type": "webhook", "url": "https://h.test/hooks/abc123", "headers": {"A": "tok"}})
    assert redact("POST https://h.test/hooks/abc123 A: tok /hooks/abc123", secrets_of(hook)) == "POST *** A: *** ***"
    mail = EmailSink(type="email", host="h", sender="a@b.test", to=["c@d.test"], password=SecretStr("pw-1"))
    assert redact("535 auth failed for pw-1", secrets_of(mail)) == "535 auth failed for ***"


def test_alert_sinks_are_job_sinks_by_type_when_there_is_one_of_the_type():
    alerts = TypeAdapter(list[AlertSinkConfig]).validate_python(
        [
            {"type": "telegram", "bot_token": "1:a", "chat_id": 5},
            {"type": "webhook", "url": "http://a.test/1"},
            {"type": "webhook", "url": "http://a.test/2"},
        ]
    )
    named = {"box": SINK.validate_python({"type": "file", "path": "/tmp/x"})}
    assert sorted(resolve_sinks(named, alerts)) == ["box", "telegram"]


def test_the_email_has_a_text_part_and_an_html_alternative():
    sink = EmailSink(type="email", host="h", sender="t@x.test", to=["a@x.test", "b@x.test"], subject_prefix="[tg]")
    msg = email_message(sink, RESULT)
    assert (msg["Subject"], msg["From"], msg["To"]) == ("[tg] brief", "t@x.test", "a@x.test, b@x.test")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "**hi**"
    assert msg.get_body(("html",)).get_content().strip() == "<p>hi</p>"
    assert file_name(RESULT) == "brief-20270115T080000Z-r1.md"


@pytest.mark.parametrize(
    ("spent", "start", "end", "now", "projected", "over"),
    [
        (2.0, 0, 86400, 43200, 4.0, False),  # half the day, $2: $4 by its end
        (3.0, 0, 86400, 43200, 6.0, True),  # over a $5 limit
        (1.0, 0, 86400, 10, 1440.0, True),  # ten seconds in: projected from a minute, not from 10 s
        (6.0, 0, 86400, 90000, 6.0, True),  # the window is over: what was spent
        (0.0, 0, 86400, 43200, 0.0, False),
    ],
)
def test_budget_forecast(spent, start, end, now, projected, over):
    f = forecast("global", "day", 5.0, spent, start, end, now)
    assert f.projected_usd == pytest.approx(projected) and f.over is over


def test_the_digest_escapes_names_in_html_and_keeps_them_in_markdown():
    rep = Report(since="2027-01-14", until="2027-01-14", timezone="UTC", requests=3, cost_usd=1.25)
    rep.by_agent = {"<script>alert(1)</script>": Group(requests=3, cost_usd=1.25)}
    d = Digest("2027-01-14", "UTC", rep, escalations=2, sessions_killed=1, job_failures=["brief (1)"])
    d.forecasts.append(forecast("global", "day", 1.0, 1.25, 0, 86400, 90000))
    html = render_html(d)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    md = render_markdown(d)
    assert "- <script>alert(1)</script>: $1.2500, 3 req" in md
    assert "2 escalations" in md and "**Sessions killed** 1; **failed jobs** brief (1)" in md
    assert "global (day): $1.2500 so far, $1.2500 projected of $1.00, $0.0000 left — OVER" in md
    assert "**Spend** $1.2500 on 3 requests: 0 local, 3 cloud (0% served locally)" in md
    assert d.subject == "tiergate digest for 2027-01-14: $1.25 spent"
