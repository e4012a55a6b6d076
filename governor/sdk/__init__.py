"""Governor's SDK for agent developers.

- `governor.sdk.client.GovernorClient`: a governed session for agents that run outside Temporal.
- `governor.sdk.workflow`: `governed_chat` / `governed_tool` inside your own agent workflow.
"""
