"""Function calling with pydantic-typed tools.

    python examples/function_calling.py                       # offline: scripted model replies
    python examples/function_calling.py --engine http://localhost:8000/v1   # a vLLM server
    python examples/function_calling.py --engine vllm         # in-process vLLM, gpt-oss-20b

The tools take and return pydantic models; harmony-agent turns their schemas into the
TypeScript-like declarations gpt-oss was trained on and validates every call against them.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Literal

import anyio
import pydantic
from harmony_agent import Agent, tool
from harmony_agent.cli import make_engine
from harmony_agent.engine import Engine, ScriptedEngine


class Flight(pydantic.BaseModel):
    number: str
    origin: str
    destination: str
    departs: dt.datetime
    seats_left: int


class SearchFlights(pydantic.BaseModel):
    origin: str = pydantic.Field(description="IATA code, e.g. OSL")
    destination: str = pydantic.Field(description="IATA code, e.g. CDG")
    day: dt.date
    cabin: Literal["economy", "business"] = "economy"


FLIGHTS = [
    Flight(
        number="SK831",
        origin="OSL",
        destination="CDG",
        departs=dt.datetime(2026, 12, 3, 7, 5),
        seats_left=4,
    ),
    Flight(
        number="AF1275",
        origin="OSL",
        destination="CDG",
        departs=dt.datetime(2026, 12, 3, 11, 40),
        seats_left=0,
    ),
]


@tool
def search_flights(query: SearchFlights) -> list[Flight]:
    """Find flights between two airports on a day."""
    return [
        f
        for f in FLIGHTS
        if (f.origin, f.destination, f.departs.date())
        == (query.origin, query.destination, query.day)
    ]


@tool
def book(flight_number: str, passenger: str) -> dict:
    """Book a seat on a flight.

    Args:
        flight_number: the flight's number, e.g. SK831
        passenger: full name of the passenger
    """
    flight = next((f for f in FLIGHTS if f.number == flight_number), None)
    if flight is None or flight.seats_left == 0:
        raise ValueError(f"no seat left on {flight_number}")
    flight.seats_left -= 1
    return {"confirmation": f"{flight_number}-{passenger.split()[-1].upper()}", "seat": "14C"}


TASK = "Book Ada Lovelace on the earliest flight from Oslo to Paris on 3 December 2026."

SCRIPT = [
    "<|channel|>analysis<|message|>Search OSL to CDG on 2026-12-03.<|end|><|start|>assistant"
    "<|channel|>commentary to=functions.search_flights <|constrain|>json<|message|>"
    '{"origin":"OSL","destination":"CDG","day":"2026-12-03"}<|call|>',
    "<|channel|>analysis<|message|>SK831 at 07:05 has seats.<|end|><|start|>assistant"
    "<|channel|>commentary to=functions.book <|constrain|>json<|message|>"
    '{"flight_number":"SK831","passenger":"Ada Lovelace"}<|call|>',
    "<|channel|>final<|message|>Booked Ada Lovelace on SK831 (07:05, seat 14C), "
    "confirmation SK831-LOVELACE.<|return|>",
]


async def main(engine: Engine) -> str:
    agent = Agent(
        "You are a travel agent. Use the tools; never invent flights.",
        tools=[search_flights, book],
        engine=engine,
        reasoning_effort="low",
    )
    result = await agent.run(TASK)
    for call in result.tool_calls:
        print(f"  {call.recipient}({call.raw_arguments}) -> {call.output[:100]}")
    print(result.final_text)
    return result.final_text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL], http://HOST:PORT/v1 (default: scripted)")
    args = parser.parse_args()
    if args.engine:
        engine = make_engine(args.engine)
    else:
        print("(offline: scripted model replies stand in for gpt-oss)")
        engine = ScriptedEngine(SCRIPT)
    anyio.run(main, engine)
