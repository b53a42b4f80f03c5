"""EVE Ref on the local server: the daily ``market-history-DAY.csv.bz2`` files and ``totals.json``.

Like the real data site, both answer conditional requests (``If-None-Match`` /
``If-Modified-Since``) with a bodiless 304, and ``totals.json`` counts exactly the rows each
day's file holds. What the config can change (by ISO day, see :class:`EsiServerConfig`):
``everef_rewrites`` (EVE Ref rewrote a past file: some rows change, new ETag and Last-Modified),
``everef_short_rows`` (the file lacks rows its total counts), ``everef_totals_skew`` (a wrong
published total) and ``everef_totals_unpublished`` (a day not yet in ``totals.json``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from aiohttp import web

from eveflow_etl.devservers import esi_data as data
from eveflow_etl.devservers.esi_state import http_date

if TYPE_CHECKING:
    from eveflow_etl.devservers.esi_server import _Handlers


def _reply(*args, **kwargs):
    # Imported late: the server module imports this one.
    from eveflow_etl.devservers.esi_server import _Reply

    return _Reply(*args, **kwargs)


async def serve_file(h: _Handlers, request: web.Request) -> web.StreamResponse:
    s = h.s
    fault = s.match_fault(request.path, None, None)
    if fault and fault.delay:
        await asyncio.sleep(fault.delay)
    try:
        day = dt.date.fromisoformat(request.match_info["day"])
    except ValueError:
        day = None
    if fault and fault.status:
        return await h._send(request, _reply(fault.status, {"error": f"injected {fault.status}"}), fault)
    if day is None or day >= s.today() or str(day.year) != request.match_info["year"]:
        return await h._send(request, _reply(404, body=b"Not Found", headers={"Content-Type": "text/plain"}), fault)
    cfg = s.config
    revision = int(cfg.everef_rewrites.get(day.isoformat(), 0))
    drop = int(cfg.everef_short_rows.get(day.isoformat(), 0))
    modified = data.everef_modified(day, revision)
    # The ETag names everything the bytes depend on, so a rewrite or a fault is a new version.
    identity = repr((cfg.seed, day.isoformat(), tuple(cfg.everef_regions), tuple(s.types), revision, drop))
    headers = {"Content-Type": "application/x-bzip2", "Last-Modified": http_date(modified),
               "ETag": '"' + hashlib.blake2b(identity.encode(), digest_size=16).hexdigest() + '"'}
    if not_modified(request, headers["ETag"], modified):
        return await h._send(request, _reply(304, headers=headers), fault)
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    sent = 0
    # Generated in a worker thread: a big file must not stall the other requests.
    chunks = data.everef_csv_bz2(cfg.seed, cfg.everef_regions, s.types, day, revision=revision, drop_rows=drop)
    loop = asyncio.get_running_loop()
    try:
        while (chunk := await loop.run_in_executor(None, next, chunks, None)) is not None:
            sent += len(chunk)
            await resp.write(chunk)
            if fault and fault.truncate:
                if request.transport is not None:
                    request.transport.close()
                break
        else:
            await resp.write_eof()
    except ConnectionError:  # the client went away
        pass
    s.stats.requests += 1
    s.stats.by_status[200] += 1
    s.stats.body_bytes += sent
    s.stats.events.append((round(time.time(), 3), request.path_qs, 200))
    return resp


async def serve_totals(h: _Handlers, request: web.Request) -> web.StreamResponse:
    """``{"YYYY-MM-DD": rows in that day's file}`` for the last ``history_days`` days."""
    s = h.s
    cfg = s.config
    fault = s.match_fault(request.path, None, None)
    if fault and fault.delay:
        await asyncio.sleep(fault.delay)
    if fault and fault.status:
        return await h._send(request, _reply(fault.status, {"error": f"injected {fault.status}"}), fault)
    today = s.today()
    days = [today - dt.timedelta(days=n) for n in range(cfg.history_days, 0, -1)]
    days = [d for d in days if d.isoformat() not in cfg.everef_totals_unpublished]
    totals = await asyncio.get_running_loop().run_in_executor(
        None, data.everef_totals, cfg.seed, cfg.everef_regions, s.types, days)
    for day, skew in cfg.everef_totals_skew.items():
        if day in totals:
            totals[day] += int(skew)
    body = json.dumps(totals).encode()
    modified = max((data.everef_modified(d, int(cfg.everef_rewrites.get(d.isoformat(), 0))) for d in days),
                   default=0.0)
    headers = {"Content-Type": "application/json", "Last-Modified": http_date(modified),
               "ETag": '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'}
    if not_modified(request, headers["ETag"], modified):
        return await h._send(request, _reply(304, headers=headers), fault)
    return await h._send(request, _reply(200, body=body, headers=headers), fault)


def not_modified(request: web.Request, etag: str, modified: float) -> bool:
    """RFC 9110 conditional GET: ``If-None-Match`` (weak comparison) decides when present,
    otherwise ``If-Modified-Since`` (the resource has not changed since that second)."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    ims = request.headers.get("If-Modified-Since")
    if ims is None:
        return False
    try:
        return int(modified) <= parsedate_to_datetime(ims).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
