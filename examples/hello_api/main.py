"""hello_api: the example FastAPI app that the demo and the tests deploy.

GET /        the app's JSON: name, version, FastAPI version, the host that answered, and the
             client (address and scheme) as the app sees it
POST /       the same answer: a write, which nginx never sends again to another app host
             when the first failed (the load tests send both)
GET /health  200 {"status": "ok"} once the app is up (the deploy waits for it)
GET /slow?seconds=N   answers after N seconds (at most 60): a request still in progress
             while the app restarts or a deploy switches (the tests use it)
WS  /ws      a WebSocket that echoes each text message (shows upgrades pass the proxy)
"""

import asyncio
import os
import socket

import fastapi
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

APP_NAME = "hello_api"
# The version of this app. The deploy can override it with APP_VERSION in the environment file.
APP_VERSION = os.environ.get("APP_VERSION", "1.0.0")

app = FastAPI(title=APP_NAME, version=APP_VERSION)


@app.get("/")
def read_root(request: Request) -> dict:
    return {
        "app": APP_NAME,
        "version": APP_VERSION,
        "fastapi": fastapi.__version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "root_path": request.scope.get("root_path", ""),
        "greeting": os.environ.get("GREETING", "Hello from FastAPI"),
    }


@app.post("/")
def write_root(request: Request) -> dict:
    return read_root(request)


@app.get("/health")
def health() -> dict:
    return {"status": "ok", "version": APP_VERSION}


@app.get("/slow")
async def slow(seconds: float = 1.0) -> dict:
    seconds = max(0.0, min(seconds, 60.0))
    await asyncio.sleep(seconds)
    return {"slept": seconds, "version": APP_VERSION, "pid": os.getpid()}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
