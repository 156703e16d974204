"""An MCP client built on the official MCP Python SDK, driven by the end-to-end tests.

Usage: python mcp_client.py URL HEADERS_JSON STEPS_JSON

Opens one Streamable HTTP session to URL with the given extra HTTP headers, initialises it,
runs each step in order and prints one JSON line with a result per step:
  {"op": "list"}                              -> {"tools": [names]}
  {"op": "call", "name": ..., "arguments": {}} -> {"content": [texts], "is_error": bool}
A JSON-RPC error the SDK raises (`MCPError`) becomes {"error": {"code", "message", "data"}}.
"""

import json
import sys

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


async def main(url, headers, steps):
    results = []
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                results.append({"server": init.server_info.name})
                for step in steps:
                    try:
                        if step["op"] == "list":
                            listed = await session.list_tools()
                            results.append({"tools": [t.name for t in listed.tools]})
                        else:
                            r = await session.call_tool(step["name"], step.get("arguments", {}))
                            texts = [c.text for c in r.content if getattr(c, "text", None) is not None]
                            results.append({"content": texts, "is_error": bool(r.is_error)})
                    except MCPError as e:
                        results.append({"error": {"code": e.code, "message": e.message, "data": e.data}})
    print(json.dumps(results))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]))
