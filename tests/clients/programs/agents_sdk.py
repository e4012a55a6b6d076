"""OpenAI Agents SDK with its default model client (the Responses API), one function tool.

Run by tests/clients in the client venv: MODE=run|stream, MODEL, NOTE_PATH, SESSION_ID,
OPENAI_BASE_URL, OPENAI_API_KEY. Prints the final output as JSON.
"""

import asyncio
import json
import os

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI


@function_tool
def read_note(path: str) -> str:
    """Read a note file."""
    with open(path) as f:
        return f.read()


async def main() -> None:
    set_tracing_disabled(True)
    # The SDK's default client, plus Governor's session header (the only change).
    set_default_openai_client(AsyncOpenAI(
        default_headers={"X-Governor-Session-ID": os.environ["SESSION_ID"]}))
    agent = Agent(name="reader", instructions="Answer from the note.",
                  model=os.environ["MODEL"], tools=[read_note])
    prompt = f"what does the note at {os.environ['NOTE_PATH']} say?"
    if os.environ["MODE"] == "stream":
        result = Runner.run_streamed(agent, prompt)
        kinds = []
        async for event in result.stream_events():
            kinds.append(event.type)
        out = {"final": result.final_output, "events": sorted(set(kinds))}
    else:
        result = await Runner.run(agent, prompt)
        out = {"final": result.final_output}
    out["items"] = [type(i).__name__ for i in result.new_items]
    print(json.dumps(out))


asyncio.run(main())
