"""Responses conversation state through the real gateway: store, previous_response_id, GET, DELETE, input_items."""

from __future__ import annotations

import json

import openai
import pytest
from test_responses_surface import config

from procs import MASTER_KEY, http, wait_until


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


def oclient(gw, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0)


def test_previous_response_id_continues_on_another_tier(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cloud = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"], api_key="sk-cheap-secret")
    gw = gateway(config(openai_up=local, anthropic_up=cloud))
    c = oclient(gw)
    first = c.responses.create(model="local-8b", instructions="Be brief.", input="My name is Ada.")
    assert c.responses.retrieve(first.id).output_text == first.output_text
    with c.responses.stream(model="sonnet", input="What is my name?", previous_response_id=first.id) as s:
        second = s.get_final_response()
    assert second.previous_response_id == first.id
    sent = posted(cloud)[-1]["body"]
    assert "system" not in sent  # the earlier instructions are not carried over
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "My name is Ada."
    assert sent["messages"][1]["content"] == first.output_text
    # the streamed one was stored too, with the whole input it answered, before its final event
    items = c.responses.input_items.list(second.id, order="asc")
    texts = [i.content[0].text for i in items.data]
    assert texts == ["My name is Ada.", first.output_text, "What is my name?"]
    assert [i.type for i in items.data] == ["message"] * 3 and all(i.id for i in items.data)
    newest = c.responses.input_items.list(second.id, limit=1)
    assert newest.data[0].content[0].text == "What is my name?" and newest.has_more
    third = c.responses.create(model="local-8b", input="And again?", previous_response_id=second.id)
    assert len(posted(local)[-1]["body"]["messages"]) == 5
    deleted = c.responses.delete(third.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(third.id)
    with pytest.raises(openai.NotFoundError) as exc:
        c.responses.create(model="local-8b", input="x", previous_response_id="resp_nope")
    assert exc.value.body["param"] == "previous_response_id"


def _works(c: openai.OpenAI) -> bool:
    try:
        c.models.list()
    except openai.AuthenticationError:
        return False
    return True


def test_store_false_keeps_nothing_and_another_key_sees_nothing(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=local))
    c = oclient(gw)
    unstored = c.responses.create(model="local-8b", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)
    mine = c.responses.create(model="local-8b", input="secret plans")
    other_key = gw.cli("keys", "create", "--name", "other").stdout.strip()
    other = oclient(gw, other_key)
    assert wait_until(lambda: _works(other), timeout=10)  # the gateway picks new keys up within a second
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="local-8b", input="x", previous_response_id=mine.id)
    assert c.responses.retrieve(mine.id).id == mine.id  # still there for its own key
    gw.stop()
    rows = gw.ledger_rows("1=1")
    assert all("secret plans" not in json.dumps(dict(r)) for r in rows)  # usage rows hold no content


def test_input_tokens_and_bad_list_queries(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=local))
    c = oclient(gw)
    counted = c.responses.input_tokens.count(model="local-8b", input="Hello there, how are you today?")
    assert counted.object == "response.input_tokens" and 5 <= counted.input_tokens <= 30
    r = c.responses.create(model="local-8b", input="Hi")
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    for query, param in (("limit=0", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("after=zz", "after")):
        status, _, data = http("GET", f"{gw.base_url}/v1/responses/{r.id}/input_items?{query}", headers=auth)
        assert status == 400 and json.loads(data)["error"]["param"] == param
    status, _, _ = http("GET", f"{gw.base_url}/v1/responses/{r.id}")
    assert status == 401
    assert len(posted(local)) == 1  # counting asked no upstream
