"""The on-disk spool and the pieces around it that need no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from records import usage_row
from tiergate.config.loading import config_from_dict
from tiergate.config.schema import masked_url
from tiergate.core.errors import ConfigError
from tiergate.core.types import UsageRecord
from tiergate.ledger.postgres import spool_dir_for, to_pyformat
from tiergate.ledger.records import (
    LocalModelEvent,
    SessionRow,
    from_line,
    pending,
    to_line,
)
from tiergate.ledger.spool import Spool


def usage(i: int) -> UsageRecord:
    return usage_row(i, agent=None, extra={"k": "v"})


def test_every_record_kind_survives_a_spool_line():
    for rec in (
        usage(1),
        SessionRow("s", "k", None, 1.0, 2.0, 1, 2, 3, 0.5, 0.1, "killed"),
        LocalModelEvent(1.0, "m", "load", '{"a": 1}'),
    ):
        p = pending(rec)
        assert from_line(to_line(p)) == p


def test_replay_in_order_deletes_files_and_skips_a_live_owner(tmp_path):
    mine, other = Spool(tmp_path), Spool(tmp_path)
    mine.append([pending(usage(i)) for i in range(3)])
    other.append([pending(usage(99))])  # another live process: its file is locked
    mine.append([pending(usage(3))])
    assert mine.pending == 4
    seen: list[str] = []
    assert mine.replay(lambda recs: seen.extend(p.record.request_id for p in recs)) == 4
    assert seen == ["r0", "r1", "r2", "r3"] and mine.pending == 0
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # only the other's, still held
    other.close()  # stopped: its file is anyone's now
    fresh = Spool(tmp_path)
    assert fresh.scan() == 1 and fresh.replay(lambda recs: seen.extend(p.record.request_id for p in recs)) == 1
    assert seen[-1] == "r99" and not list(tmp_path.glob("*.jsonl"))


def test_a_failed_replay_keeps_the_file_and_a_torn_line_is_skipped(tmp_path):
    spool = Spool(tmp_path)
    spool.append([pending(usage(1)), pending(usage(2))])
    spool.close()
    (path,) = tmp_path.glob("*.jsonl")
    with open(path, "ab") as f:
        f.write(b'{"id": "x", "kind": "usa')  # a crash in the middle of a write

    def down(recs):  # type: ignore[no-untyped-def]
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        spool.replay(down)
    assert path.exists()
    got: list[str] = []
    assert spool.replay(lambda recs: got.extend(p.record.request_id for p in recs)) == 2
    assert got == ["r1", "r2"] and not path.exists()


def test_placeholders_and_spool_directories():
    assert to_pyformat("SELECT * FROM t WHERE a = ? AND b LIKE 'x%?' AND c > ?") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%?' AND c > %s"
    )
    tmp = Path("/s")
    a = spool_dir_for(tmp, "postgresql://u:one@h:5432/db")
    assert a == spool_dir_for(tmp, "postgresql://u:two@h:5432/db")  # the password is not part of the identity
    assert a != spool_dir_for(tmp, "postgresql://u@h:5432/other") and a.parent == tmp


def test_ledger_url_from_env_is_secret_and_masked():
    url = "postgresql://tiergate:s3cret@db:5432/tiergate?sslmode=require"
    cfg = config_from_dict({"ledger": "env:LEDGER_URL", "ledger_spool": "~/spool"}, env={"LEDGER_URL": url})
    assert cfg.ledger_url == url and "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())
    assert cfg.ledger_display == "postgresql://tiergate:***@db:5432/tiergate?sslmode=require"
    assert "~" not in str(cfg.ledger_spool_dir)
    assert masked_url("postgres://db/x?user=u&password=p&x=1") == "postgres://db/x?user=u&password=***&x=1"
    assert config_from_dict({}).ledger_spool_dir.name == "spool"
    with pytest.raises(ConfigError, match="postgresql://"):
        config_from_dict({"ledger": "mysql://x"})
