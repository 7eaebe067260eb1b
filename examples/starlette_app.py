"""Starlette with background tasks. Run: ``hypercorn examples.starlette_app:app``.

``POST /orders`` answers 201 at once, then three tasks run in the order they
were added: reserve stock, e-mail the receipt, notify the warehouse.
``POST /uploads`` (a CSV body) answers 202; the file is processed afterwards.
``GET /report`` streams a CSV; its download is logged after the last chunk.
"""

import itertools
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from asgi_bgtasks import BackgroundTasksMiddleware, background_tasks
from examples.tasks import (
    log_report_download,
    process_csv,
    record,
    report_chunks,
    send_email,
    write_notification,
)

logging.basicConfig(level=logging.INFO)
order_numbers = itertools.count(1)


def reserve_stock(order: int) -> None:
    record("stock reserved", order=order)


async def place_order(request: Request) -> JSONResponse:
    order = next(order_numbers)
    tasks = background_tasks(request.scope)  # or: asgi_bgtasks.add_task(...)
    tasks.add_task(reserve_stock, order)
    tasks.add_task(send_email, request.query_params["email"], f"Receipt #{order}")
    tasks.add_task(write_notification, f"order {order} ready to ship")
    return JSONResponse({"order": order}, status_code=201)


async def upload(request: Request) -> JSONResponse:
    name = request.query_params.get("name", "upload.csv")
    data = await request.body()  # read it now: tasks get data, never the request
    background_tasks(request.scope).add_task(process_csv, name, data)
    return JSONResponse({"status": "processing", "name": name}, status_code=202)


async def report(request: Request) -> StreamingResponse:
    background_tasks(request.scope).add_task(log_report_download, "csv")
    return StreamingResponse(report_chunks(), media_type="text/csv")


routes = [
    Route("/orders", place_order, methods=["POST"]),
    Route("/uploads", upload, methods=["POST"]),
    Route("/report", report),
]
# Outermost: nothing that buffers the response may sit outside it.
app = BackgroundTasksMiddleware(Starlette(routes=routes))
