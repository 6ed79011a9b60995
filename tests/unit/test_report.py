"""tiergate report: savings against the configured frontier and the priciest deployment used, by group and by day
in the config's time zone, on a SQLite ledger built with known rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
import yaml
from typer.testing import CliRunner

from tiergate.cli import app
from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.core.types import UsageRecord
from tiergate.ledger.base import open_ledger
from tiergate.ledger.report import (
    Report,
    Row,
    build_report,
    format_csv,
    format_report,
    frontier_reference,
    period_bounds,
    summarize,
)

TZ = "Europe/Paris"  # summer time starts on 2026-03-29: that day has 23 hours


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def raw_config(ledger: str | None = None) -> dict:
    def dep(name: str, tier: int, price: dict | None, provider: str = "cloud") -> dict:
        d = {"name": name, "provider": provider, "model": f"model-{name}", "tier": tier}
        return {**d, "price": price} if price is not None else d

    raw = {
        "timezone": TZ,
        "providers": {
            "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8/v1", "local": True},
            "cloud": {"api": "openai-chat", "base_url": "http://127.0.0.1:9/v1"},
        },
        "deployments": [
            dep("local", 0, None, provider="box"),
            dep("cheap", 1, {"input_per_mtok": 1, "output_per_mtok": 2}),
            dep(
                "mid",
                2,
                {"input_per_mtok": 3, "output_per_mtok": 15, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75},
            ),
            dep("front-dear", 3, {"input_per_mtok": 10, "output_per_mtok": 30}),
            dep(  # the cheapest of tier 3
                "front-ref",
                3,
                {"input_per_mtok": 5, "output_per_mtok": 25, "cache_read_per_mtok": 0.5, "cache_write_per_mtok": 6.25},
            ),
            dep("mystery", 4, None),  # unpriced: never the frontier, whatever its tier
        ],
    }
    return {**raw, "ledger": ledger} if ledger else raw


CATALOG = build_catalog(config_from_dict(raw_config(), env={}))


def record(
    i: int,
    ts: str,
    deployment: str | None,
    prompt: int,
    completion: int,
    cost: float,
    *,
    agent: str = "a",
    task: str = "t1",
    kind: str = "request",
    status: int = 200,
    read: int = 0,
    write: int = 0,
) -> UsageRecord:
    d = CATALOG.deployments.get(deployment or "")
    return UsageRecord(
        ts=utc(ts),
        request_id=f"r{i}",
        kind=kind,  # type: ignore[arg-type]
        key_name="k",
        agent=agent,
        session="s",
        task=task,
        requested_model="auto",
        deployment=deployment,
        provider=d.provider if d else None,
        tier=d.tier if d else None,
        local=bool(d and d.local),
        prompt_tokens=prompt,
        completion_tokens=completion,
        usage_estimated=False,
        cost_usd=cost,
        latency_ms=1.0,
        ttft_ms=None,
        status=status,
        stream=False,
        fallbacks=0,
        reason="r",
        extra={"cache_read_tokens": str(read), "cache_write_tokens": str(write)} if read or write else None,
    )


# Paris days: 03-28 runs 03-27T23:00Z..03-28T23:00Z, 03-29 runs 03-28T23:00Z..03-29T22:00Z (summer time)
ROWS = [
    record(1, "2026-03-27T22:30:00", "local", 999, 9, 0.0),  # Paris 03-27 23:30: before the period
    record(2, "2026-03-27T23:30:00", "local", 500, 50, 0.0),  # Paris 03-28 00:30 (UTC still 03-27)
    record(3, "2026-03-28T10:00:00", "front-dear", 2000, 200, 0.026, agent="b", task="t3"),
    record(4, "2026-03-28T22:30:00", "cheap", 4000, 500, 0.005, task="t2"),  # Paris 03-28 23:30
    record(5, "2026-03-28T23:30:00", "local", 1000, 100, 0.0),  # Paris 03-29 00:30 (UTC still 03-28)
    # 1,000 uncached + 8,000 read + 1,000 written, at mid's own cache prices
    record(6, "2026-03-29T21:30:00", "mid", 10_000, 1000, 0.02415, agent="b", read=8000, write=1000),
    record(7, "2026-03-29T22:30:00", "cheap", 777, 7, 0.1),  # Paris 03-30 00:30: after the period
    record(8, "2026-03-29T12:00:00", None, 0, 0, 0.0, status=502),  # failed request
    record(9, "2026-03-29T12:00:00", "cheap", 0, 0, 0.0, kind="attempt", status=503),  # failed attempt
    # a stream the client abandoned: a failed request, yet billed for what was generated
    record(10, "2026-03-29T13:00:00", "cheap", 300, 40, 0.00038, agent="b", task="t2", status=499),
]


def on(d: str, prompt: int, completion: int, read: int = 0, write: int = 0) -> float:
    return CATALOG.deployments[d].cost(prompt, completion, read, write)


# what each served row would cost all on front-ref (the frontier) and all on front-dear (priciest used)
F = {2: on("front-ref", 500, 50), 3: on("front-ref", 2000, 200), 4: on("front-ref", 4000, 500)}
F |= {5: on("front-ref", 1000, 100), 6: on("front-ref", 10_000, 1000, 8000, 1000), 10: on("front-ref", 300, 40)}
P = {2: on("front-dear", 500, 50), 3: 0.026, 4: on("front-dear", 4000, 500)}
P |= {5: on("front-dear", 1000, 100), 6: on("front-dear", 10_000, 1000, 8000, 1000), 10: on("front-dear", 300, 40)}
COST = {2: 0.0, 3: 0.026, 4: 0.005, 5: 0.0, 6: 0.02415, 10: 0.00038}


@pytest.fixture
def ledger(tmp_path):
    led = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    led.start()
    for r in ROWS:
        led.record(r)
    led.close()  # returns when every record is written
    led = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


def test_the_cost_formula_the_rows_were_written_with():
    assert on("mid", 10_000, 1000, 8000, 1000) == pytest.approx(0.02415, rel=1e-12)
    assert F[6] == pytest.approx((1000 * 5 + 8000 * 0.5 + 1000 * 6.25 + 1000 * 25) / 1e6)  # its own cache prices
    assert P[6] == pytest.approx((10_000 * 10 + 1000 * 30) / 1e6)  # front-dear has none: the input price


@pytest.mark.parametrize(
    ("group", "key", "rows"),
    [
        ("by_day", "2026-03-28", [2, 3, 4]),
        ("by_day", "2026-03-29", [5, 6, 10]),
        ("by_deployment", "local", [2, 5]),
        ("by_deployment", "mid", [6]),
        ("by_deployment", "cheap", [4, 10]),
        ("by_tier", "tier 0", [2, 5]),
        ("by_tier", "tier 3", [3]),
        ("by_agent", "a", [2, 4, 5]),
        ("by_agent", "b", [3, 6, 10]),
        ("by_task", "t1", [2, 5, 6]),
        ("by_task", "t2", [4, 10]),
    ],
)
def test_groups_and_their_savings(ledger, group, key, rows):
    rep = build_report(ledger, "2026-03-28", "2026-03-29", CATALOG, tz=TZ)
    g = getattr(rep, group)[key]
    assert g.requests == len(rows)
    assert g.cost_usd == pytest.approx(sum(COST[i] for i in rows), abs=1e-12)
    assert g.frontier_cost_usd == pytest.approx(sum(F[i] for i in rows), abs=1e-12)
    assert g.saved_vs_frontier_usd == pytest.approx(g.frontier_cost_usd - g.cost_usd, abs=1e-12)
    assert g.priciest_used_cost_usd == pytest.approx(sum(P[i] for i in rows), abs=1e-12)
    assert g.saved_vs_priciest_used_usd == pytest.approx(g.priciest_used_cost_usd - g.cost_usd, abs=1e-12)


def test_totals_references_and_period(ledger):
    rep = build_report(ledger, "2026-03-28", "2026-03-29", CATALOG, tz=TZ)
    assert (rep.requests, rep.failed_requests, rep.billed_failures, rep.failed_attempts) == (5, 2, 1, 1)
    assert (rep.frontier_deployment, rep.priciest_used_deployment) == ("front-ref", "front-dear")
    assert rep.prompt_tokens == 17_800 and (rep.cache_read_tokens, rep.cache_write_tokens) == (8000, 1000)
    assert rep.cost_usd == pytest.approx(sum(COST.values()), abs=1e-12)
    assert rep.all_frontier_cost_usd == pytest.approx(sum(F.values()), abs=1e-12)
    assert rep.saved_vs_frontier_usd == pytest.approx(sum(F.values()) - sum(COST.values()), abs=1e-12)
    assert rep.all_priciest_used_cost_usd == pytest.approx(sum(P.values()), abs=1e-12)
    assert rep.local_share == pytest.approx(2 / 5)
    assert list(rep.by_day) == ["2026-03-28", "2026-03-29"]


@pytest.mark.parametrize(
    ("since", "until", "tz", "requests"),
    [
        ("2026-03-28", "2026-03-28", TZ, 3),  # rows 2, 3, 4 (row 5 is already the 29th in Paris)
        ("2026-03-29", "2026-03-29", TZ, 2),  # rows 5, 6 (row 7 is the 30th; 10 was abandoned)
        ("2026-03-28", "2026-03-28", "UTC", 3),  # rows 3, 4, 5 in UTC: row 2 is the 27th there
        ("2026-03-29", "2026-03-29", "UTC", 2),  # rows 6, 7
        ("2026-03-27", "2026-03-27", "UTC", 2),  # rows 1, 2
        ("2026-03-30", "2026-03-30", TZ, 1),
        ("2026-03-27", "2026-03-30", TZ, 7),
    ],
)
def test_days_are_calendar_days_in_the_config_time_zone(ledger, since, until, tz, requests):
    assert build_report(ledger, since, until, CATALOG, tz=tz).requests == requests


def test_period_bounds_follow_summer_time():
    start, end = period_bounds("2026-03-29", "2026-03-29", TZ)
    assert (start, end) == (utc("2026-03-28T23:00:00"), utc("2026-03-29T22:00:00"))  # 23 hours
    assert period_bounds("2026-03-28", "2026-03-29", "UTC") == (utc("2026-03-28T00:00:00"), utc("2026-03-30T00:00:00"))


def test_the_frontier_is_the_cheapest_priced_deployment_of_the_highest_priced_tier():
    assert frontier_reference(CATALOG).name == "front-ref"
    raw = raw_config()
    raw["deployments"] = [d for d in raw["deployments"] if d["tier"] < 3]  # mystery (tier 4) is unpriced
    assert frontier_reference(build_catalog(config_from_dict(raw, env={}))).name == "mid"
    also = {"name": "also-mid", "provider": "cloud", "model": "x", "tier": 2}
    raw["deployments"].append({**also, "price": {"input_per_mtok": 3, "output_per_mtok": 15}})
    assert frontier_reference(build_catalog(config_from_dict(raw, env={}))).name == "also-mid"  # a tie: by name
    raw["deployments"] = [d for d in raw["deployments"] if d["name"] == "mystery"]
    assert frontier_reference(build_catalog(config_from_dict(raw, env={}))) is None


def test_an_unpriced_deployment_that_served_is_named(tmp_path):
    rep = build_report(open_ledger(f"sqlite:///{tmp_path / 'empty.db'}"), "2026-03-28", catalog=CATALOG, tz=TZ)
    assert rep.requests == 0 and rep.unpriced_deployments == []
    served = [Row(utc("2026-03-28T10:00:00"), "mystery", 4, False, None, None, 10, 1, 0, 0, 0.0)]
    rep = summarize(Report("2026-03-28", "2026-03-28", TZ), served, CATALOG)
    assert rep.unpriced_deployments == ["mystery"] and "WARNING: no price known for mystery" in format_report(rep)


def test_text_and_csv_output(ledger):
    rep = build_report(ledger, "2026-03-28", "2026-03-29", CATALOG, tz=TZ)
    text = format_report(rep)
    assert "2026-03-28 to 2026-03-29 (Europe/Paris)" in text and "configured frontier (front-ref)" in text
    assert "priciest used (front-dear)" in text and "by day:" in text
    lines = list(csv.DictReader(io.StringIO(format_csv(rep))))
    total = next(r for r in lines if r["group"] == "total")
    assert int(total["requests"]) == 6 and float(total["saved_vs_frontier_usd"]) == pytest.approx(
        rep.saved_vs_frontier_usd, abs=1e-9
    )
    day = next(r for r in lines if r["group"] == "day" and r["key"] == "2026-03-29")
    assert int(day["requests"]) == 3 and float(day["cost_usd"]) == pytest.approx(0.02415 + 0.00038)
    assert {r["group"] for r in lines} == {"total", "deployment", "tier", "agent", "task", "day"}


# --------------------------------------------------------------------------- the command
@pytest.fixture
def config_file(tmp_path, ledger):
    path = tmp_path / "tiergate.yaml"
    path.write_text(yaml.safe_dump(raw_config(ledger=f"sqlite:///{tmp_path / 'ledger.db'}")))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, ["report", *args])


def test_report_command_since_until_json_and_csv(config_file):
    out = cli("--config", str(config_file), "--since", "2026-03-28", "--until", "2026-03-29", "--json")
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert rep["requests"] == 5 and rep["timezone"] == TZ and rep["frontier_deployment"] == "front-ref"
    assert set(rep["by_day"]) == {"2026-03-28", "2026-03-29"}
    day = json.loads(cli("--config", str(config_file), "--day", "2026-03-29", "--json").stdout)
    assert day["requests"] == 2 and day["since"] == day["until"] == "2026-03-29"
    only_until = json.loads(cli("--config", str(config_file), "--until", "2026-03-28", "--json").stdout)
    assert only_until["requests"] == 3 and only_until["since"] == "2026-03-28"
    rows = cli("--config", str(config_file), "--since", "2026-03-28", "--until", "2026-03-28", "--csv").stdout
    assert rows.splitlines()[0].startswith("group,key,requests,") and "\nday,2026-03-28,3," in rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--day", "28/03/2026"], "--day: expected YYYY-MM-DD"),
        (["--since", "2026-03-29", "--until", "2026-03-28"], "is after --until"),
        (["--day", "2026-03-28", "--since", "2026-03-28"], "not both"),
        (["--json", "--csv"], "not both"),
    ],
)
def test_report_command_refuses_bad_periods(config_file, args, message):
    out = cli("--config", str(config_file), *args)
    assert out.exit_code == 2 and message in out.output
