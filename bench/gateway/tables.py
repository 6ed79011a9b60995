"""Markdown tables and the target verdicts for the gateway benchmark (kept apart from the runner)."""

from __future__ import annotations

import math
import statistics

DIRECT, BARE, TIERGATE, LITELLM = "upstream-direct", "bare-aiohttp", "tiergate", "litellm"
LABEL = {
    DIRECT: "upstream direct (floor)",
    BARE: "bare aiohttp proxy",
    TIERGATE: "**tiergate**",
    LITELLM: "LiteLLM proxy",
}

# the targets
MIN_THROUGHPUT_VS_BARE = 0.50
MAX_ADDED_P50_MS = 1.0
MAX_ADDED_P99_MS = 5.0
MAX_ADDED_TTFT_MS = 1.0
MAX_RSS_MB = 100.0
MAX_SOAK_GROWTH_PCT = 10.0
MIN_TRANSLATION_VS_BARE = 0.30
# "no chunk held back": the events arrive in about as many separate reads as from the upstream
# directly, and first -> last event takes no more than MAX_EXTRA_LAG_MS longer than direct
MAX_EXTRA_LAG_MS = 2.0
MIN_READS_SHARE = 0.8


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def med(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def wk(runs: list[dict], lane: str, key: str) -> float:
    return med(r[lane][key] for r in runs if lane in r)


def rss_mb(runs: list[dict]) -> float:
    """Largest RSS seen at the end of any lane, median over rounds."""
    return med(max(v for k, v in r.items() if k.startswith("rss_")) / 1024 for r in runs)


def f0(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.0f}"


def f2(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2f}"


def ratio(a: float, b: float) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or not b:
        return "-"
    return f"{a / b:.2f}x"


def summary(data: dict) -> dict:
    """The figures the tables and verdicts use, per target (medians of rounds)."""
    res = data["results"]
    out: dict = {}
    for name, runs in res.items():
        if not runs:
            continue
        s = {
            "rps32": wk(runs, "c32", "rps"),
            "cpu32": wk(runs, "c32", "cpu_us_per_req"),
            "p50": wk(runs, "c4", "p50_us") / 1e3,
            "p99": wk(runs, "c4", "p99_us") / 1e3,
            "rps_per_round": [r["c32"]["rps"] for r in runs],
            "rss_mb": rss_mb(runs) if name != DIRECT else float("nan"),
            "sweep": {c: (wk(runs, f"c{c}", "rps"), wk(runs, f"c{c}", "p99_us") / 1e3) for c in (1, 4, 16, 32, 64)},
        }
        st = [r["stream"] for r in runs if "stream" in r]
        if st:
            s["stream"] = {
                k: med(x[k] for x in st)
                for k in (
                    "ttft_p50_ms",
                    "ttft_p99_ms",
                    "content_p50_ms",
                    "last_p50_ms",
                    "spread_p50_ms",
                    "events",
                    "reads",
                    "cpu_us_per_stream",
                    "bad",
                )
            }
            s["stream_rounds"] = st
        if any("resp_c32" in r for r in runs):
            s["resp"] = {
                "rps32": wk(runs, "resp_c32", "rps"),
                "cpu32": wk(runs, "resp_c32", "cpu_us_per_req"),
                "p50": wk(runs, "resp_c4", "p50_us") / 1e3,
                "p99": wk(runs, "resp_c4", "p99_us") / 1e3,
                "rps_per_round": [r["resp_c32"]["rps"] for r in runs if "resp_c32" in r],
            }
        if any("anth_c32" in r for r in runs):
            s["anth"] = {
                "rps32": wk(runs, "anth_c32", "rps"),
                "cpu32": wk(runs, "anth_c32", "cpu_us_per_req"),
                "p50": wk(runs, "anth_c4", "p50_us") / 1e3,
                "p99": wk(runs, "anth_c4", "p99_us") / 1e3,
                "rps_per_round": [r["anth_c32"]["rps"] for r in runs if "anth_c32" in r],
            }
        out[name] = s
    # streaming: added TTFT, and whether events were bunched or delayed progressively (held back)
    if DIRECT in out and "stream_rounds" in out[DIRECT]:
        d_rounds = out[DIRECT]["stream_rounds"]
        for name, s in out.items():
            if name == DIRECT or "stream_rounds" not in s:
                continue
            added = [m["ttft_p50_ms"] - b["ttft_p50_ms"] for m, b in zip(s["stream_rounds"], d_rounds, strict=False)]
            # first -> last event, beyond what the upstream itself took: a proxy that forwards each
            # event as it comes adds ~0; one that holds events back stretches or bunches them
            lag = [m["spread_p50_ms"] - b["spread_p50_ms"] for m, b in zip(s["stream_rounds"], d_rounds, strict=False)]
            s["stream"]["added_ttft_ms"] = med(added)
            s["stream"]["extra_lag_ms"] = med(lag)
            d = out[DIRECT]["stream"]
            s["stream"]["held_back"] = not (
                s["stream"]["bad"] == 0
                and abs(s["stream"]["extra_lag_ms"]) <= MAX_EXTRA_LAG_MS
                and s["stream"]["reads"] >= MIN_READS_SHARE * d["reads"]
            )
    return out


def verdicts(data: dict, s: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, holds) for the issue's targets."""
    rows: list[tuple[str, str, str, bool | None]] = []
    tg, bare, d = s.get(TIERGATE), s.get(BARE), s.get(DIRECT)
    if not (tg and bare and d):
        return rows
    r = tg["rps32"] / bare["rps32"]
    rows.append(
        (
            "throughput vs bare proxy (chat, 32 conns)",
            f">= {MIN_THROUGHPUT_VS_BARE:.0%}",
            f"{r:.0%} ({tg['rps32']:,.0f} vs {bare['rps32']:,.0f} req/s)",
            r >= MIN_THROUGHPUT_VS_BARE,
        )
    )
    a50, a99 = tg["p50"] - d["p50"], tg["p99"] - d["p99"]
    rows.append(
        ("added latency p50 (chat, 4 conns)", f"<= {MAX_ADDED_P50_MS:g} ms", f"{a50:.2f} ms", a50 <= MAX_ADDED_P50_MS)
    )
    rows.append(
        ("added latency p99 (chat, 4 conns)", f"<= {MAX_ADDED_P99_MS:g} ms", f"{a99:.2f} ms", a99 <= MAX_ADDED_P99_MS)
    )
    if "stream" in tg and "added_ttft_ms" in tg["stream"]:
        t = tg["stream"]
        rows.append(
            (
                "streaming added TTFT p50",
                f"<= {MAX_ADDED_TTFT_MS:g} ms",
                f"{t['added_ttft_ms']:.2f} ms",
                t["added_ttft_ms"] <= MAX_ADDED_TTFT_MS,
            )
        )
        rows.append(
            (
                "no chunk held back",
                "every event forwarded as it comes",
                f"{t['reads']:.0f} separate reads for {t['events']:.0f} events; first -> last event "
                f"{t['extra_lag_ms']:+.2f} ms vs direct",
                not t["held_back"],
            )
        )
    rss = [tg["rss_mb"]]
    soak = data.get("soak")
    if soak:
        rss.append(soak["rss_max_kb"] / 1024)
    rows.append(
        (
            "RSS",
            f"<= {MAX_RSS_MB:g} MB",
            f"{max(rss):.1f} MB (largest at the end of a lane" + (", or during the soak)" if soak else ")"),
            max(rss) <= MAX_RSS_MB,
        )
    )
    if soak:
        rows.append(
            (
                f"RSS growth over the {soak['seconds']} s soak",
                f"< {MAX_SOAK_GROWTH_PCT:g}%",
                f"{soak['growth_pct']:+.1f}% ({soak['rss_first_kb'] / 1024:.1f} -> {soak['rss_end_kb'] / 1024:.1f} MB)",
                soak["growth_pct"] < MAX_SOAK_GROWTH_PCT,
            )
        )
    else:
        rows.append(("RSS growth over a soak", f"< {MAX_SOAK_GROWTH_PCT:g}%", "not run (--soak SECONDS)", None))
    if "anth" in tg:
        r = tg["anth"]["rps32"] / bare["rps32"]
        rows.append(
            (
                "translation (Anthropic client -> OpenAI upstream) vs bare proxy's OpenAI lane",
                f">= {MIN_TRANSLATION_VS_BARE:.0%}",
                f"{r:.0%} ({tg['anth']['rps32']:,.0f} vs {bare['rps32']:,.0f} req/s)",
                r >= MIN_TRANSLATION_VS_BARE,
            )
        )
    if "resp" in tg:
        r = tg["resp"]["rps32"] / bare["rps32"]
        rows.append(
            (
                "translation (Responses client -> OpenAI chat upstream) vs bare proxy's OpenAI lane",
                f">= {MIN_TRANSLATION_VS_BARE:.0%}",
                f"{r:.0%} ({tg['resp']['rps32']:,.0f} vs {bare['rps32']:,.0f} req/s)",
                r >= MIN_TRANSLATION_VS_BARE,
            )
        )
    return rows


def ledger_rows(soak: dict) -> str:
    if soak.get("ledger_rows_soak") is not None:
        return f"{soak['ledger_rows_soak']:,}"
    if soak.get("ledger_rows_total") is not None:
        return f"{soak['ledger_rows_total']:,} (whole run)"
    return "-"


def render(data: dict) -> str:
    s = summary(data)
    data["summary"] = {k: {kk: vv for kk, vv in v.items() if kk != "stream_rounds"} for k, v in s.items()}
    st = data["settings"]
    v = data["versions"]
    m = data["machine"]
    names = [n for n in (DIRECT, BARE, TIERGATE, LITELLM) if n in s]
    bare, ll, d = s.get(BARE), s.get(LITELLM), s.get(DIRECT)
    md = [
        f"# tiergate gateway benchmark ({data['date']})",
        "",
        f"- machine: {m['node']}, {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}; shared and noisy",
        f"- tiergate {v.get('tiergate')} (git {v.get('tiergate_git')}"
        + (", with uncommitted changes in src/" if v.get("src_uncommitted_changes") else "")
        + f"), aiohttp "
        f"{v.get('aiohttp')}, Python {v.get('python')}; LiteLLM {v.get('litellm', 'not installed')}; "
        f"{v.get('nginx')}; {v.get('wrk')}",
        f"- command: `{data['command']}`",
        f"- {st['rounds']} interleaved round(s), {st['duration_s']} s per wrk run (+1 s warm-up), "
        f"{st['streams']} streams per target and round; niceness {st['nice']}; target on core 0, "
        f"wrk / stream client / nginx on core 1; bench time {data['bench_seconds']:.0f} s"
        + (f", soak {data['soak']['seconds']} s" if data.get("soak") else ""),
        f"- bodies: OpenAI chat request {st['chat_body_bytes']} B, Anthropic request {st['anthropic_body_bytes']} B, "
        f"Responses request {st.get('responses_body_bytes', '-')} B, "
        f"completion 657 B; stream: {st['stream_chunks']} chunks + usage + [DONE], {st['stream_gap_ms']:g} ms apart",
        "",
    ]

    md += ["## Targets (the issue's goals)", "", "| goal | target | measured | holds |", "|---|---|---|---|"]
    for goal, target, measured, ok in verdicts(data, s):
        md.append(f"| {goal} | {target} | {measured} | {'yes' if ok else ('-' if ok is None else '**no**')} |")
    md.append("")

    md += [
        "## 1. Non-streaming chat (OpenAI client -> OpenAI upstream)",
        "",
        "req/s and CPU per request at 32 connections; latency at 4 connections; added = target minus direct. "
        "CPU µs/req is the target's own utime+stime (/proc/PID/stat) over the run divided by the requests; "
        "RSS is VmRSS at the end of a lane (largest of the lanes).",
        "",
        "| target | req/s @32c | per round | CPU µs/req | p50 ms @4c | p99 ms @4c | added p50 ms | added p99 ms | "
        "RSS MB | req/s vs bare | req/s vs LiteLLM |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        x = s[n]
        direct = n == DIRECT
        md.append(
            f"| {LABEL[n]} | {f0(x['rps32'])} | {' / '.join(f0(r) for r in x['rps_per_round'])} | "
            f"{'-' if direct else f0(x['cpu32'])} | {f2(x['p50'])} | {f2(x['p99'])} | "
            f"{'-' if direct else f2(x['p50'] - d['p50'])} | {'-' if direct else f2(x['p99'] - d['p99'])} | "
            f"{'-' if direct else format(x['rss_mb'], '.1f')} | "
            f"{ratio(x['rps32'], bare['rps32']) if bare and not direct else '-'} | "
            f"{ratio(x['rps32'], ll['rps32']) if ll and not direct else '-'} |"
        )
    md.append("")

    if any("stream" in s[n] for n in names):
        md += [
            "## 2. Streaming chat (time to first token, chunk forwarding)",
            "",
            f"{st['streams']} sequential streaming requests per target and round, each on a new connection "
            "(connect not timed), from a Python asyncio client on core 1. TTFT = request written -> first "
            'complete `data:` event; first token = first event with non-empty content; "stretch" = first -> last '
            "event time minus the same for direct (a proxy that forwards each event as it comes adds ~0); held back "
            f"if the stretch exceeds {MAX_EXTRA_LAG_MS:g} ms or events arrive in fewer than "
            f"{MIN_READS_SHARE:.0%} as many separate reads as direct.",
            "",
            "| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | first token p50 ms | last event p50 ms | "
            "events | separate reads | stretch ms | held back? | CPU µs/stream | ratio CPU vs bare |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for n in names:
            if "stream" not in s[n]:
                continue
            t = s[n]["stream"]
            direct = n == DIRECT
            held = "-" if direct else ("**yes**" if t.get("held_back") else "no")
            cpu_ratio = (
                "-"
                if direct or not bare or n == BARE
                else ratio(t["cpu_us_per_stream"], bare["stream"]["cpu_us_per_stream"])
            )
            md.append(
                f"| {LABEL[n]} | {f2(t['ttft_p50_ms'])} | {f2(t['ttft_p99_ms'])} | "
                f"{'-' if direct else f2(t.get('added_ttft_ms'))} | {f2(t['content_p50_ms'])} | "
                f"{f2(t['last_p50_ms'])} | {t['events']:.0f} | {t['reads']:.0f} | "
                f"{'-' if direct else f2(t.get('extra_lag_ms'))} | {held} | "
                f"{'-' if direct else f0(t['cpu_us_per_stream'])} | "
                f"{cpu_ratio} |"
            )
        md.append("")

    if any("anth" in s[n] for n in names):
        md += [
            "## 3. Translation: Anthropic client -> OpenAI upstream (POST /v1/messages)",
            "",
            "The bare proxy cannot translate: its row is its OpenAI chat lane (section 1), the reference the "
            "goal is stated against.",
            "",
            "| target | lane | req/s @32c | per round | CPU µs/req | p50 ms @4c | p99 ms @4c | added p50 ms | "
            "req/s vs bare (OpenAI lane) | req/s vs LiteLLM |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        if bare:
            md.append(
                f"| {LABEL[BARE]} | OpenAI chat (reference) | {f0(bare['rps32'])} | "
                f"{' / '.join(f0(r) for r in bare['rps_per_round'])} | {f0(bare['cpu32'])} | {f2(bare['p50'])} | "
                f"{f2(bare['p99'])} | {f2(bare['p50'] - d['p50'])} | 1.00x | - |"
            )
        for n in names:
            if "anth" not in s[n]:
                continue
            a = s[n]["anth"]
            vs_ll = ratio(a["rps32"], ll["anth"]["rps32"]) if ll and "anth" in ll and n != LITELLM else "-"
            md.append(
                f"| {LABEL[n]} | Anthropic -> OpenAI | {f0(a['rps32'])} | "
                f"{' / '.join(f0(r) for r in a['rps_per_round'])} | {f0(a['cpu32'])} | {f2(a['p50'])} | "
                f"{f2(a['p99'])} | {f2(a['p50'] - d['p50'])} | {ratio(a['rps32'], bare['rps32']) if bare else '-'} | "
                f"{vs_ll} |"
            )
        md.append("")

    if any("resp" in s[n] for n in names):
        md += [
            "## 3b. Translation: OpenAI Responses client -> OpenAI chat upstream (POST /v1/responses, store false)",
            "",
            "| target | req/s @32c | per round | CPU µs/req | p50 ms @4c | p99 ms @4c | added p50 ms | "
            "req/s vs bare (OpenAI lane) |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for n in names:
            if "resp" not in s[n]:
                continue
            a = s[n]["resp"]
            md.append(
                f"| {LABEL[n]} | {f0(a['rps32'])} | {' / '.join(f0(r) for r in a['rps_per_round'])} | "
                f"{f0(a['cpu32'])} | {f2(a['p50'])} | {f2(a['p99'])} | {f2(a['p50'] - d['p50'])} | "
                f"{ratio(a['rps32'], bare['rps32']) if bare else '-'} |"
            )
        md.append("")

    md += [
        "## 4. Concurrency sweep (non-streaming chat)",
        "",
        "req/s / p99 ms at each number of connections (4 and 32 are the runs of section 1).",
        "",
        "| target | " + " | ".join(f"{c} conn" for c in (1, 4, 16, 32, 64)) + " |",
        "|---|" + "---:|" * 5,
    ]
    for n in names:
        cells = [f"{f0(r)} / {f2(p)}" for r, p in (s[n]["sweep"][c] for c in (1, 4, 16, 32, 64))]
        md.append(f"| {LABEL[n]} | " + " | ".join(cells) + " |")
    md.append("")

    w = data.get("workers") or {}
    if w:
        md += [
            "## 5. `tiergate serve --workers 2` vs `--workers 1` (non-streaming chat)",
            "",
            "Both allowed cores 0 and 1; wrk and nginx stay pinned to core 1, so on this 2-core machine a "
            "second worker competes with the load generator for core 1.",
            "",
            "| workers | req/s @32c | per round | CPU µs/req (all processes) | p50 ms @4c | p99 ms @4c | "
            "RSS MB (all processes) | processes |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for k in ("w1", "w2"):
            if k in w and w[k]:
                runs = w[k]
                md.append(
                    f"| {k[1:]} | {f0(wk(runs, 'c32', 'rps'))} | "
                    f"{' / '.join(f0(r['c32']['rps']) for r in runs)} | {f0(wk(runs, 'c32', 'cpu_us_per_req'))} | "
                    f"{f2(wk(runs, 'c4', 'p50_us') / 1e3)} | {f2(wk(runs, 'c4', 'p99_us') / 1e3)} | "
                    f"{med(r['rss_kb'] for r in runs) / 1024:.1f} | {med(r['processes'] for r in runs):.0f} |"
                )
            if f"{k}_error" in w:
                md.append(f"| {k[1:]} | failed: {w[k + '_error'][:300]} | | | | | | |")
        md.append("")

    soak = data.get("soak")
    if soak:
        samples = soak["samples"]
        md += [
            f"## 6. Soak: tiergate for {soak['seconds']} s",
            "",
            f"wrk, {soak['conns']} connections each pausing {soak['delay_ms']} ms between requests; mix "
            f"{soak['mix']}; RSS sampled every 10 s.",
            "",
            "| requests | req/s | errors | p50 ms | p99 ms | CPU % | RSS idle MB | RSS at 10 s MB | RSS end MB | "
            "RSS max MB | growth | ledger rows written |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {soak['requests']:,} | {soak['rps']:,.0f} | {soak['errors']} | {soak['p50_us'] / 1e3:.2f} | "
            f"{soak['p99_us'] / 1e3:.2f} | {soak['cpu_pct']:.0f} | {soak['rss_idle_kb'] / 1024:.1f} | "
            f"{soak['rss_first_kb'] / 1024:.1f} | {soak['rss_end_kb'] / 1024:.1f} | {soak['rss_max_kb'] / 1024:.1f} | "
            f"{soak['growth_pct']:+.1f}% | {ledger_rows(soak)} |",
            "",
        ]
        if samples:
            step = max(1, len(samples) // 12)
            md += ["RSS MB over time: " + ", ".join(f"{t:.0f} s {kb / 1024:.1f}" for t, kb in samples[::step]), ""]

    if data.get("notes"):
        md += ["## Notes", "", *[f"- {n}" for n in data["notes"]], ""]
    return "\n".join(md)
