"""Human approval: a payment tool that pauses the run until someone says yes (or no).

    python examples/approval.py                        # offline: scripted replies, approve
    python examples/approval.py --reject "over budget" # the model is told and adapts
    python examples/approval.py --engine http://localhost:8000/v1   # a vLLM server
    python examples/approval.py --engine vllm          # in-process vLLM, gpt-oss-20b

The run pauses after the model's call is complete and before the tool runs. The paused state
is written to a JSON file, as a web app would keep it until the approval comes in; a fresh
agent (another process, a day later) reads it back and resumes by appending the decision's
outcome to the very tokens the model sampled. Usage limits cap the whole run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio
from harmony_agent import Agent, RunState, UsageLimits, tool
from harmony_agent.cli import make_engine
from harmony_agent.engine import Engine, ScriptedEngine

PAID: list[str] = []


@tool
def balance() -> dict:
    """The account's balance in euros."""
    return {"eur": 1200}


@tool(needs_approval=lambda ctx, call: call.arguments["eur"] > 100)
def pay(to: str, eur: int, reference: str) -> dict:
    """Pay an invoice. Payments over 100 EUR wait for a person's approval.

    Args:
        to: the payee's IBAN
        eur: the amount in whole euros
        reference: the invoice number
    """
    PAID.append(f"{eur} EUR to {to} ({reference})")
    return {"status": "sent", "eur": eur, "to": to}


TASK = "Pay invoice INV-7 of 450 EUR to NO93 8601 1117 947 if the balance allows."
INSTRUCTIONS = "You handle payments. Check the balance first. Never pay twice."

SCRIPT = [
    "<|channel|>analysis<|message|>Check the balance first.<|end|><|start|>assistant"
    "<|channel|>commentary to=functions.balance <|constrain|>json<|message|>{}<|call|>",
    "<|channel|>analysis<|message|>1200 covers 450; pay it.<|end|><|start|>assistant"
    "<|channel|>commentary to=functions.pay <|constrain|>json<|message|>"
    '{"to":"NO93 8601 1117 947","eur":450,"reference":"INV-7"}<|call|>',
]
APPROVED = ["<|channel|>final<|message|>Paid INV-7: 450 EUR sent.<|return|>"]
REJECTED = ["<|channel|>final<|message|>I did not pay INV-7: the payment was declined.<|return|>"]


def make_agent(engine: Engine) -> Agent:
    return Agent(
        INSTRUCTIONS,
        tools=[balance, pay],
        engine=engine,
        reasoning_effort="low",
        usage_limits=UsageLimits(max_turns=8, max_tool_calls=4, max_total_tokens=60_000),
    )


async def main(first: Engine, second: Engine, reject: str | None, saved: Path) -> None:
    paused = await make_agent(first).run(TASK)
    if paused.status != "paused":
        print(f"no approval was needed: {paused.final_text}")
        return
    for call in paused.interruptions:
        print(f"waiting for approval: {call.call_id} {call.recipient} {call.raw_arguments}")
    await anyio.Path(saved).write_text(paused.state.to_json())
    print(f"paused state saved to {saved.name} ({len(paused.state.prompt_ids)} tokens)")

    # later, elsewhere: a new agent with the same instructions and tools picks it up
    state = RunState.from_json(await anyio.Path(saved).read_text())
    decision = reject if reject is not None else True
    result = await make_agent(second).resume(
        state, approve={call.call_id: decision for call in state.pending}
    )
    for call in result.tool_calls:
        print(f"  {call.recipient}({call.raw_arguments}) -> {call.output[:120]}")
    print(f"payments made: {PAID or 'none'}")
    print(result.final_text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="vllm[:MODEL], http://HOST:PORT/v1 (default: scripted)")
    parser.add_argument("--reject", metavar="REASON", help="decline the payment, with a reason")
    args = parser.parse_args()
    if args.engine:
        first = second = make_engine(args.engine)
    else:
        print("(offline: scripted model replies stand in for gpt-oss)")
        first = ScriptedEngine(SCRIPT)
        second = ScriptedEngine(REJECTED if args.reject is not None else APPROVED)
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, first, second, args.reject, Path(tmp) / "paused-run.json")
