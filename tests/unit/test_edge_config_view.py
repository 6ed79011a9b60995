"""GET /admin/config's view of the config: nothing that may be a credential is shown."""

from __future__ import annotations

import orjson
import pytest

from tiergate.api.config_view import MASK, masked_config, masked_url
from tiergate.config.loading import config_from_dict

SECRETS = [
    "sk-master-SECRET1",
    "sk-openai-SECRET2",
    "hdr-SECRET3",
    "tg-bot-SECRET4",
    "hooks.slack.com/services/SECRET5",
    "webhook-path-SECRET6",
    "webhook-hdr-SECRET7",
    "pg-SECRET8",
    "redis-SECRET9",
    "gemini-SECRET10",
]


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("https://api.openai.com/v1", True, "https://api.openai.com/v1"),
        ("https://user:pw@host:8443/v1?key=abc&x=1", True, f"https://user:{MASK}@host:8443/v1?key={MASK}&x={MASK}"),
        ("redis://:pw@127.0.0.1:6379/0", True, f"redis://:{MASK}@127.0.0.1:6379/0"),
        ("http://[::1]:8080/v1", True, "http://[::1]:8080/v1"),
        ("https://hooks.example.com/T000/B000/XXXX", False, f"https://hooks.example.com/{MASK}"),
        ("http://host:99999/", True, MASK),  # unparseable port: nothing shown
    ],
)
def test_masked_url(url, keep_path, shown):
    assert masked_url(url, keep_path=keep_path) == shown


def test_every_secret_is_masked_and_the_rest_is_shown():
    env = {"M": SECRETS[0], "O": SECRETS[1], "T": SECRETS[3], "S": f"https://{SECRETS[4]}"}
    cfg = config_from_dict(
        {
            "auth": {"master_key": "env:M"},
            "ledger": f"postgresql://tiergate:{SECRETS[7]}@db.internal:5432/tiergate",
            "state": f"redis://:{SECRETS[8]}@127.0.0.1:6379/0",
            "providers": {
                "openai": {
                    "api": "openai-chat",
                    "base_url": "https://api.openai.com/v1",
                    "api_key": "env:O",
                    "headers": {"X-Extra-Auth": SECRETS[2]},
                },
                "gem": {"api": "openai-chat", "base_url": f"https://gem.example/v1?key={SECRETS[9]}"},
            },
            "deployments": [{"name": "mini", "provider": "openai", "model": "gpt-4o-mini", "tier": 1}],
            "alerts": [
                {"type": "telegram", "bot_token": "env:T", "chat_id": 42},
                {"type": "slack", "url": "env:S"},
                {"type": "webhook", "url": f"https://hooks.example/{SECRETS[5]}", "headers": {"A": SECRETS[6]}},
            ],
        },
        env=env,
    )
    view = masked_config(cfg)
    text = orjson.dumps(view).decode()
    assert not [s for s in SECRETS if s in text], text
    assert view["providers"]["openai"]["base_url"] == "https://api.openai.com/v1"
    assert view["deployments"][0]["model"] == "gpt-4o-mini"
    assert view["ledger"].startswith("postgresql://tiergate:***@db.internal")
    assert view["alerts"][2]["url"] == f"https://hooks.example/{MASK}"
    assert view["server"]["max_json_depth"] == 64 and view["auth"]["max_failures_per_minute"] == 20
