"""The OpenAI Agents SDK (openai-agents) runs an agent with a tool through tiergate, on its default Responses model."""

from __future__ import annotations

import asyncio

import openai
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from procs import MASTER_KEY


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


def config(up) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"box": {"api": "openai-chat", "base_url": f"{up.base_url}/v1", "local": True}},
        "deployments": [
            {"name": "local-8b", "provider": "box", "model": "llama-8b", "tier": 0, "context_window": 32768}
        ],
        "routing": {"num_retries": 0},
    }


def agent_for(gw, calls: list[str]) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"18C and sunny in {city}"

    client = openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    return Agent(
        name="forecaster",
        instructions="Answer weather questions with the tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="local-8b", openai_client=client),  # the SDK's default model class
    )


def test_agent_calls_its_tool_and_answers_plain_and_streamed(standins, gateway):
    set_tracing_disabled(True)  # traces would go to OpenAI's own endpoint
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(up))
    calls: list[str] = []
    agent = agent_for(gw, calls)

    async def go():
        result = await Runner.run(agent, "use tool: weather in Paris?")
        streamed = Runner.run_streamed(agent, "use tool: weather in Oslo?")
        kinds = [e.type async for e in streamed.stream_events()]
        follow = await Runner.run(agent, "Thanks!", previous_response_id=result.last_response_id)
        return result, streamed, kinds, follow

    result, streamed, kinds, follow = asyncio.run(go())
    assert len(calls) == 2 and result.final_output.startswith("[local]")
    assert streamed.final_output.startswith("[local]") and "raw_response_event" in kinds
    assert follow.final_output.startswith("[local]")
    bodies = [r["body"] for r in posted(up)]
    # each tool turn: the call, then the tool's output tied to its id, on the next request
    tool_turn = bodies[1]["messages"]
    assert tool_turn[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tool_turn[-1]["role"] == "tool" and "18C and sunny" in tool_turn[-1]["content"]
    assert tool_turn[-1]["tool_call_id"] == tool_turn[-2]["tool_calls"][0]["id"]
    # previous_response_id: the stored conversation came first, then the new turn
    last = bodies[-1]["messages"]
    assert last[-1] == {"role": "user", "content": "Thanks!"} and len(last) > 3
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND protocol='openai-responses'")
    assert len(rows) == len(bodies) and all(r["status"] == 200 for r in rows)
