"""Model Context Protocol servers as toolsets (the optional ``harmony-agent[mcp]`` extra).

Pass a server in ``tools=[...]``. Its tools are listed when a run first needs them (before
the prompt that declares them is rendered), kept, and listed again after the server says
``notifications/tools/list_changed``. Each is declared in the developer message as
``functions.<prefix>__<tool>``: gpt-oss was trained to call developer functions in the
``functions`` namespace, and a prefix keeps two servers' tools apart.

Example — a server over stdio, shared by every run inside ``async with agent:``::

    import sys
    from harmony_agent import Agent
    from harmony_agent.tools.mcp import MCPServerStdio

    async def main(engine):
        notes = MCPServerStdio(sys.executable, args=["notes_server.py"], prefix="notes")
        async with Agent(tools=[notes], engine=engine) as agent:
            print((await agent.run("What is on my list?")).final_text)
"""

from ._server import MCPServerSSE, MCPServerStdio, MCPServerStreamableHTTP, MCPTool, MCPToolset

__all__ = ["MCPServerSSE", "MCPServerStdio", "MCPServerStreamableHTTP", "MCPTool", "MCPToolset"]
