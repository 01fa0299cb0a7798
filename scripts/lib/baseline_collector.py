"""The baseline scripts/bench-listen measures `shellyctl listen` against.

A straightforward collector of the same push protocol: FastAPI + uvicorn +
asyncpg, a pool of 10 connections, and in each connection's receive loop
one awaited `INSERT ... ON CONFLICT DO NOTHING` into power_logs per minute
row. A switch channel gets its minute's row the first time it is seen above
5 W in that minute (state in memory, per connection). No device info, no
sessions, no periods, no spool, no checks beyond the token: what a first
version of such a service looks like, not what listen does.

    LISTEN_TOKEN=... DATABASE_URL=... python baseline_collector.py --bind 127.0.0.1:0

Devices connect to ws://ADDR/ws/TOKEN. The first line on stdout is the
bound address (host:port). Stops on SIGTERM.
"""

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import time

import asyncpg
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

THRESHOLD_W = 5.0
INSERT = """
INSERT INTO power_logs ("timestamp", device_id, component, channel,
                        apower_w, voltage_v, current_a, energy_total_wh)
VALUES (to_timestamp($1::float8), $2, 'switch', $3, $4::float8, $5::float8, $6::float8, $7::float8)
ON CONFLICT DO NOTHING
"""

TOKEN = os.environ.get("LISTEN_TOKEN", "")
APP_NAME = "shellyctl-baseline"
pool: asyncpg.Pool


def number(x):
    """A JSON number as a float; anything else as None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def minute_rows(frame, logged):
    """The rows a status frame makes: (minute, channel, values) of each
    switch channel above the threshold not yet logged in that minute;
    `logged` (channel -> minute) is updated."""
    if frame.get("method") not in ("NotifyStatus", "NotifyFullStatus"):
        return []
    params = frame.get("params")
    if not isinstance(params, dict):
        return []
    ts = number(params.get("ts"))
    minute = int((ts if ts is not None else time.time()) // 60) * 60
    rows = []
    for key, comp in params.items():
        if not key.startswith("switch:") or not isinstance(comp, dict):
            continue
        try:
            channel = int(key[len("switch:"):])
        except ValueError:
            continue
        apower = number(comp.get("apower"))
        if apower is None or apower <= THRESHOLD_W or logged.get(channel) == minute:
            continue
        logged[channel] = minute
        energy = comp.get("aenergy")
        rows.append((minute, channel, apower, number(comp.get("voltage")), number(comp.get("current")),
                     number(energy.get("total")) if isinstance(energy, dict) else None))
    return rows


@contextlib.asynccontextmanager
async def lifespan(_app):
    global pool
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=10, max_size=10,
        server_settings={"application_name": APP_NAME})
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws/{token}")
async def device(ws: WebSocket, token: str):
    if not TOKEN or not hmac.compare_digest(token.encode(), TOKEN.encode()):
        await ws.close(code=1008)
        return
    await ws.accept()
    logged = {}
    try:
        while True:
            text = await ws.receive_text()
            try:
                frame = json.loads(text)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            device_id = frame.get("src")
            if not isinstance(device_id, str) or not device_id:
                continue
            for minute, channel, apower, voltage, current, energy in minute_rows(frame, logged):
                await pool.execute(INSERT, minute, device_id, channel, apower, voltage, current, energy)
    except WebSocketDisconnect:
        pass


def main():
    global APP_NAME
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1:0")
    ap.add_argument("--app-name", default=APP_NAME, help="application_name of its database connections")
    args = ap.parse_args()
    APP_NAME = args.app_name
    host, port = args.bind.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(4096)
    print("%s:%d" % sock.getsockname(), flush=True)
    # uvicorn re-raises the SIGTERM it stopped on once it has shut down;
    # with this handler that ends main() (exit 0) instead of the process.
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())
