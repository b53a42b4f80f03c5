"""Deterministic EVE market data for the local ESI server.

Every value is a pure function of (seed, region, type, day / order index, market version), so the
same request always gets the same answer, the ESI history of a day equals the EVE Ref row for that
day, and the server needs no stored state. Ranges follow the real market: prices from about 1 ISK
to billions, volumes inversely related to price, 1000 orders a page.
"""

from __future__ import annotations

import bz2
import datetime as dt
import hashlib
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np

ORDERS_PER_PAGE = 1000
TYPES_PER_PAGE = 1000

# A few real market types first (Tritanium … Morphite, PLEX, skill injectors), then generated ids.
KNOWN_TYPES = (34, 35, 36, 37, 38, 39, 40, 11399, 44992, 40520, 40519, 16274, 16272, 16273,
               17887, 17888, 17889, 4051, 4246, 4247, 4312, 3683, 2393, 2396, 3689, 9848,
               11538, 2205, 2488, 12058)

# Trade hub station and solar system by region; other regions get a made-up station.
HUBS = {
    10000002: (60003760, 30000142),
    10000043: (60008494, 30002187),
    10000032: (60011866, 30002659),
    10000030: (60004588, 30002510),
    10000042: (60005686, 30002053),
}
BUY_RANGES = ("station", "solarsystem", "region", "1", "2", "3", "4", "5", "10", "20", "30", "40")
DURATIONS = (90, 30, 14, 7, 3, 1)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def is_market_region(region_id: int) -> bool:
    """K-space regions and the PLEX region have a market; anything else answers 400 like ESI."""
    return 10000001 <= region_id <= 10000070 or region_id == 19000001


def _key(*parts: int) -> np.uint64:
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised; uint64 overflow wraps on purpose."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _u01(key: np.uint64, idx: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers, one per index, stable for (key, index)."""
    return (_mix(_mix(np.asarray(idx, dtype=np.uint64)) ^ key) >> np.uint64(11)).astype(np.float64) / 2.0**53


def market_types(count: int, seed: int) -> list[int]:
    """The first ``count`` market type ids (sorted), the same for every region."""
    ids = list(KNOWN_TYPES[:count])
    n = 0
    while len(ids) < count:
        candidate = 1000 + int(_mix(np.array([_key(seed, 7, n)]))[0] % np.uint64(60000))
        if candidate not in ids:
            ids.append(candidate)
        n += 1
    return sorted(ids)


@lru_cache(maxsize=200_000)
def base_price(seed: int, type_id: int) -> float:
    fixed = {34: 4.2, 35: 9.5, 36: 60.0, 37: 95.0, 38: 520.0, 39: 1100.0, 40: 4900.0,
             44992: 4_800_000.0, 40520: 850_000_000.0, 40519: 420_000_000.0}
    if type_id in fixed:
        return fixed[type_id]
    u = float(_u01(_key(seed, 1, type_id), np.array([0]))[0])
    return round(10 ** (0.3 + 8.7 * u), 2)  # 2 ISK … 1 billion ISK, log-uniform


def _history_core(keys: np.ndarray, prices: np.ndarray, day_num: np.ndarray) -> dict[str, np.ndarray]:
    """Daily figures for types × days: ``keys``/``prices`` shaped (T, 1), ``day_num`` (D,);
    every result is (T, D). ESI history and the EVE Ref file both come from here."""
    phase = _u01(keys, np.array([1])) * 2 * math.pi
    noise = _u01(keys, day_num)
    average = prices * np.exp(0.12 * np.sin(day_num / 29.0 + phase) + 0.04 * (noise - 0.5))
    spread = 0.01 + 0.08 * _u01(keys ^ np.uint64(1), day_num)
    highest = average * (1 + spread)
    lowest = average * (1 - spread * _u01(keys ^ np.uint64(2), day_num))
    scale = np.maximum(1.0, 2e9 / np.maximum(prices, 1.0))
    volume = np.ceil(scale * (0.2 + 1.6 * _u01(keys ^ np.uint64(3), day_num))).astype(np.int64)
    counts = (5 + 3000 * _u01(keys ^ np.uint64(4), day_num) / (1 + np.log10(np.maximum(prices, 1.0)))).astype(np.int64)
    order_count = np.maximum(1, np.minimum(volume, counts))
    rare = _u01(keys, np.array([2])) < 0.3  # some types do not trade every day
    traded = _u01(keys ^ np.uint64(5), day_num) >= np.where(rare, 0.25, 0.0)
    return {"average": np.round(average, 2), "highest": np.round(highest, 2), "lowest": np.round(lowest, 2),
            "order_count": order_count, "volume": volume, "traded": traded}


def _keys_prices(seed: int, region_id: int, types: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([_key(seed, 2, region_id, t) for t in types], dtype=np.uint64).reshape(-1, 1)
    prices = np.array([base_price(seed, t) for t in types], dtype=np.float64).reshape(-1, 1)
    return keys, prices


def history_rows(seed: int, region_id: int, type_id: int, days: Sequence[dt.date]) -> dict[str, np.ndarray]:
    """Columns of the daily history of one type in one region for the given days (days with no
    trades are left out, as ESI does)."""
    day_num = np.array([d.toordinal() for d in days], dtype=np.int64)
    keys, prices = _keys_prices(seed, region_id, [type_id])
    core = {k: v[0] for k, v in _history_core(keys, prices, day_num).items()}
    traded = core.pop("traded")
    out = {"date": np.array([d.isoformat() for d in days])[traded]}
    out.update({k: v[traded] for k, v in core.items()})
    return out


def history_day(seed: int, region_id: int, types: Sequence[int], day: dt.date) -> dict[str, np.ndarray]:
    """One day of every type in a region (vectorised; for the EVE Ref file). Same figures as
    :func:`history_rows`; types that did not trade that day are left out."""
    keys, prices = _keys_prices(seed, region_id, types)
    core = {k: v[:, 0] for k, v in _history_core(keys, prices, np.array([day.toordinal()])).items()}
    traded = core.pop("traded")
    out = {"type_id": np.asarray(types, dtype=np.int64)[traded]}
    out.update({k: v[traded] for k, v in core.items()})
    return out


def history_json(seed: int, region_id: int, type_id: int, today: dt.date, n_days: int) -> list[dict]:
    days = [today - dt.timedelta(days=n_days - i) for i in range(n_days)]
    cols = history_rows(seed, region_id, type_id, days)
    return [
        {"average": a, "date": d, "highest": h, "lowest": lo, "order_count": c, "volume": v}
        for d, a, h, lo, c, v in zip(cols["date"].tolist(), cols["average"].tolist(), cols["highest"].tolist(),
                                     cols["lowest"].tolist(), cols["order_count"].tolist(), cols["volume"].tolist())
    ]


def order_pages(orders_per_region: int) -> int:
    return max(1, math.ceil(orders_per_region / ORDERS_PER_PAGE))


def orders_page(seed: int, region_id: int, page: int, *, orders_per_region: int, types: Sequence[int],
                version: int, anchor: dt.datetime) -> list[dict]:
    """Page ``page`` (1-based) of a region's order book at market ``version``.

    Each version drops the oldest 5 % of orders, adds as many new ones and reprices ~10 % of the
    rest, so successive snapshots have inserts, updates and closed orders.
    """
    shift = max(1, orders_per_region // 20)
    start = version * shift + (page - 1) * ORDERS_PER_PAGE
    stop = version * shift + min(orders_per_region, page * ORDERS_PER_PAGE)
    if start >= stop:
        return []
    idx = np.arange(start, stop, dtype=np.int64)
    key = _key(seed, 3, region_id)
    type_arr = np.asarray(types, dtype=np.int64)[(_mix(idx.astype(np.uint64) ^ key) % np.uint64(len(types))).astype(np.int64)]
    prices = np.array([base_price(seed, int(t)) for t in type_arr])
    is_buy = _u01(key ^ np.uint64(1), idx) < 0.45
    margin = 0.01 + 0.25 * _u01(key ^ np.uint64(2), idx)
    price = np.where(is_buy, prices * (1 - margin), prices * (1 + margin))
    changed = _u01(_key(seed, 4, region_id, version), idx) < 0.1
    price = np.round(np.where(changed, price * 0.99, price), 2)
    size = np.maximum(1.0, 5e8 / np.maximum(prices, 1.0))
    volume_total = np.ceil(size * (0.01 + _u01(key ^ np.uint64(3), idx))).astype(np.int64)
    remain_share = np.where(changed, 0.5, 1.0) * (0.05 + 0.95 * _u01(key ^ np.uint64(4), idx))
    volume_remain = np.maximum(1, np.ceil(volume_total * remain_share)).astype(np.int64)
    duration = np.asarray(DURATIONS)[(_u01(key ^ np.uint64(5), idx) * len(DURATIONS)).astype(np.int64)]
    age = _u01(key ^ np.uint64(6), idx) * 86400 * 30
    ranges = np.asarray(BUY_RANGES)[(_u01(key ^ np.uint64(7), idx) * len(BUY_RANGES)).astype(np.int64)]
    station, system = HUBS.get(region_id, (60000000 + region_id % 1000 * 100, 30000000 + region_id % 1000 * 10))
    anchor_ts = anchor.timestamp()
    region_base = 6_000_000_000 + (region_id % 1000) * 100_000_000
    out = []
    for i, t, p, buy, vt, vr, dur, a, rng in zip(idx.tolist(), type_arr.tolist(), price.tolist(), is_buy.tolist(),
                                                 volume_total.tolist(), volume_remain.tolist(), duration.tolist(),
                                                 age.tolist(), ranges.tolist()):
        issued = dt.datetime.fromtimestamp(anchor_ts - int(a), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append({
            "duration": dur, "is_buy_order": buy, "issued": issued, "location_id": station,
            "min_volume": 1, "order_id": region_base + i, "price": p, "range": rng if buy else "region",
            "system_id": system, "type_id": t, "volume_remain": vr, "volume_total": vt,
        })
    return out


MOKAAM_SENTINELS = ("Null", "ERROR: 404", "ERROR: 400", "Itemid not found", None)


def mokaam_all(seed: int, region_id: int, types: Sequence[int], today: dt.date, *, sentinels: bool) -> dict:
    """Mokaam's ``/API/market/all`` object: per-type aggregates keyed by the type id as a string.

    With ``sentinels`` the last few types carry the sentinel ``last_data`` values the reference
    project met (``"Null"``, ``"ERROR: 404"`` …) and one value is not an object at all.
    """
    days = [today - dt.timedelta(days=i) for i in range(365, 0, -1)]
    out: dict[str, object] = {}
    for type_id in types:
        cols = history_rows(seed, region_id, type_id, days)
        if len(cols["date"]) == 0:
            continue
        avg, vol = cols["average"], cols["volume"]
        hi, lo, cnt = cols["highest"], cols["lowest"], cols["order_count"]
        row: dict[str, object] = {"typeid": type_id}
        for name, n in (("yesterday", 1), ("week", 7), ("month", 30), ("quarter", 90), ("year", 365)):
            a, v = avg[-n:], vol[-n:]
            row[f"vol_{name}"] = int(v.sum())
            row[f"avg_price_{name}"] = round(float(a.mean()), 2)
            row[f"size_{name}"] = round(float(v.mean()), 2)
            row[f"high_{name}"] = round(float(hi[-n:].max()), 2)
            row[f"low_{name}"] = round(float(lo[-n:].min()), 2)
            row[f"order_count_{name}"] = int(cnt[-n:].sum())
            if n > 1:
                row[f"vwap_{name}"] = round(float((a * v).sum() / max(int(v.sum()), 1)), 2)
                row[f"std_dev_{name}"] = round(float(a.std()), 2)
        row["_52w_high"] = round(float(hi.max()), 2)
        row["_52w_low"] = round(float(lo.min()), 2)
        row["last_data"] = str(cols["date"][-1])
        out[str(type_id)] = row
    if sentinels and len(out) > len(MOKAAM_SENTINELS) + 1:
        keys = list(out)[-(len(MOKAAM_SENTINELS) + 1):]
        for key, sentinel in zip(keys, MOKAAM_SENTINELS):
            out[key]["last_data"] = sentinel  # type: ignore[index]
        out[keys[-1]] = "Itemid not found"
    return out


EVEREF_COLUMNS = ("average", "date", "highest", "lowest", "order_count", "volume", "region_id",
                  "type_id", "http_last_modified")


def everef_csv_bz2(seed: int, regions: Sequence[int], types: Sequence[int], day: dt.date, *,
                   revision: int = 0, drop_rows: int = 0) -> Iterator[bytes]:
    """The EVE Ref daily file as bz2-compressed CSV chunks, generated region by region.

    ``revision`` > 0: the file as EVE Ref rewrote it later (newly scraped figures for some rows,
    see :func:`everef_day`). ``drop_rows``: that many rows left out of an otherwise well-formed
    file (a broken export), while :func:`everef_totals` still counts them.
    """
    comp = bz2.BZ2Compressor(6)
    yield comp.compress((",".join(EVEREF_COLUMNS) + "\n").encode())
    date = day.isoformat()
    for region_id in regions:
        cols = everef_day(seed, region_id, types, day, revision)
        lines = [f"{a},{date},{h},{lo},{c},{v},{region_id},{t},{s}\n"
                 for a, h, lo, c, v, t, s in zip(cols["average"].tolist(), cols["highest"].tolist(),
                                                cols["lowest"].tolist(), cols["order_count"].tolist(),
                                                cols["volume"].tolist(), cols["type_id"].tolist(),
                                                cols["http_last_modified"].tolist())]
        if drop_rows > 0:
            lines, drop_rows = lines[drop_rows:], max(0, drop_rows - len(lines))
        data = comp.compress("".join(lines).encode())
        if data:
            yield data
    yield comp.flush()


def everef_modified(day: dt.date, revision: int = 0) -> float:
    """When EVE Ref wrote the file of ``day``: the next day at 11:05 UTC, an hour later per rewrite."""
    first = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(11, 5), dt.UTC)
    return (first + dt.timedelta(hours=revision)).timestamp()


def everef_day(seed: int, region_id: int, types: Sequence[int], day: dt.date, revision: int = 0) -> dict[str, np.ndarray]:
    """The rows of one region in the EVE Ref file of ``day`` (the ESI history of that day).

    Each rewrite (``revision`` > 0) gives about a fifth of the rows a higher volume and order
    count, stamped with the rewrite's time: late trades ESI reported after the first scrape. The
    set of rows, and so the day's total, stays the same.
    """
    cols = history_day(seed, region_id, types, day)
    n = len(cols["type_id"])
    stamp = np.full(n, _stamp(everef_modified(day)), dtype=object)
    for rev in range(1, revision + 1):
        late = _u01(_key(seed, 8, region_id, day.toordinal(), rev), np.arange(n)) < 0.2
        cols["volume"] = cols["volume"] + np.where(late, 7 * rev, 0)
        cols["order_count"] = cols["order_count"] + np.where(late, 1, 0)
        stamp[late] = _stamp(everef_modified(day, rev))
    cols["http_last_modified"] = stamp
    return cols


def everef_totals(seed: int, regions: Sequence[int], types: Sequence[int], days: Sequence[dt.date]) -> dict[str, int]:
    """EVE Ref's ``totals.json``: rows of each day's file (every region), by ISO day."""
    day_num = np.array([d.toordinal() for d in days], dtype=np.int64)
    counts = np.zeros(len(days), dtype=np.int64)
    for region_id in regions:
        keys, prices = _keys_prices(seed, region_id, types)
        counts += _history_core(keys, prices, day_num)["traded"].sum(axis=0)
    return {d.isoformat(): int(c) for d, c in zip(days, counts.tolist())}


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
