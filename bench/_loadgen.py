"""A load process for enqueue_single when wrk is not installed: N concurrent aiohttp
connections posting one new job each per request for a fixed time. Prints one JSON line:
``{"requests", "errors", "seconds"}``.

    python -m bench._loadgen --url http://127.0.0.1:8787/enqueue --conns 32 --seconds 5 --tag A
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def run(url: str, conns: int, seconds: float, tag: str) -> dict[str, float]:
    import aiohttp

    done = errors = 0
    stop_at = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def one(worker: int, session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            body = (f'{{"provider":"stockx","sku":"{tag}-{worker}-{n}","size":"10",'
                    f'"priority":100}}').encode()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 202:
                    done += 1
                else:
                    errors += 1

    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(i, session) for i in range(conns)))
    return {"requests": done, "errors": errors, "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--tag", default="L")
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.url, a.conns, a.seconds, a.tag))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
