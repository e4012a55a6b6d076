"""LangChain `with_structured_output` on a sample-config virtual model (MODEL), via ChatOpenAI.

Run by tests/clients in the client venv with OPENAI_BASE_URL / OPENAI_API_KEY; prints JSON.
"""

import json
import os

from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


class Ticket(BaseModel):
    title: str = Field(description="short title")
    priority: int = Field(ge=1, le=5)
    tags: list[str]


llm = ChatOpenAI(model=os.environ["MODEL"], max_retries=0,
                 default_headers={"X-Governor-Session-ID": os.environ["SESSION_ID"]})
ticket = llm.with_structured_output(Ticket).invoke("file a ticket: the login page is down")
assert isinstance(ticket, Ticket)
print(json.dumps(ticket.model_dump()))
