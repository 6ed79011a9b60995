"""Dashboard sessions (api/ui_session.py): expiry, the bound, and nothing secret kept in the store."""

from __future__ import annotations

from tiergate.api.ui_session import UiSessions
from tiergate.guardrails.alerts import HISTORY_SIZE, Alert, AlertDispatcher


def test_sessions_expire_when_idle_or_too_old_and_close_at_sign_out():
    now = [0.0]
    store = UiSessions(idle_s=100, absolute_s=250, clock=lambda: now[0])
    token, s = store.open("master")
    for t in (90.0, 180.0, 240.0):  # each use restarts the idle clock
        now[0] = t
        assert store.find(token) is s and store.alive(s)
    now[0] = 251.0  # past the absolute limit although used 11 s ago
    assert store.find(token) is None and not store.alive(s) and len(store) == 0

    token, s = store.open("master")
    now[0] += 101  # idle too long
    assert not store.alive(s) and store.find(token) is None

    token, s = store.open("master")
    store.close(token)
    assert store.find(token) is None and not store.alive(s)
    assert store.find(None) is None and store.find("x" * 500) is None and store.find("not-a-token") is None


def test_the_store_holds_only_digests_and_is_bounded():
    store = UiSessions(max_sessions=3)
    tokens = [store.open("master")[0] for _ in range(5)]
    assert len(store) == 3
    assert [store.find(t) is not None for t in tokens] == [False, False, True, True, True]  # the oldest signed out
    kept = repr(store._by_digest)
    assert not any(t in kept for t in tokens)  # a leaked store reveals no cookie
    a, b = store.open("master")[1], store.open("master")[1]
    assert a.csrf != b.csrf and len(a.csrf) >= 32


def test_alerts_are_kept_in_a_bounded_ring_newest_last():
    d = AlertDispatcher([], clock=lambda: 42.0)
    for i in range(HISTORY_SIZE + 5):
        d.emit(Alert("budget_threshold", f"alert {i}", f"key-{i}"))
    d.emit(Alert("budget_threshold", "again", "key-3"))  # deduped: neither sent nor kept again
    assert len(d.history) == HISTORY_SIZE
    assert d.history[-1].message == f"alert {HISTORY_SIZE + 4}" and d.history[0].message == "alert 5"
    assert d.history[-1].ts == 42.0 and d.history[-1].deliveries == {}  # no sink: logged only
