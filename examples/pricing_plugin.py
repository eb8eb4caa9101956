"""A plugin service for mychat in Python: it joins the live service registry by speaking the
NATS micro services protocol (nats-py's `nats.micro`), so `mychat status` and
`GET /api/admin/system/services` list it while it runs.

    PYTHONPATH=.tools/py python3 examples/pricing_plugin.py nats://127.0.0.1:4222
"""

import asyncio
import datetime
import json
import socket
import sys

import nats
from nats.micro import add_service


async def main(url: str) -> None:
    nc = await nats.connect(url)
    service = await add_service(
        nc,
        name="pricing_plugin",
        version="1.0.0",
        description="quotes a session price (a plugin in Python)",
        metadata={
            "part": "plugin",
            "node": socket.gethostname(),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
    )

    async def quote(request) -> None:
        minutes = json.loads(request.data or b"{}").get("minutes", 10)
        await request.respond(json.dumps({"price_fen": 100 * minutes}).encode())

    await service.add_endpoint(name="quote", subject="plugins.pricing.quote", handler=quote)
    print("ready", flush=True)
    await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"))
