"""A minimal FastAPI app for the hubtwist recipe (docs/recipes.md): a page, a static file,
a WebSocket echo. Served by uvicorn on a unix socket."""

import pathlib

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

app = FastAPI()
app.mount("/static", StaticFiles(directory=pathlib.Path(__file__).parent / "static"), name="static")


@app.get("/", response_class=HTMLResponse)
def page(request: Request) -> str:
    # url_for builds public URLs from uvicorn's --root-path (hubtwist's {prefix})
    return (f'<title>recipe-fastapi-ok</title>'
            f'<link rel="stylesheet" href="{request.url_for("static", path="recipe.css")}">')


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text("echo: " + text)
