#!/usr/bin/python3
"""A Modbus TCP server for edged's driver integration tests.

It is an independent peer: pymodbus 3.0.0 (Debian python3-pymodbus) answers
the requests, and every typed value is put into the registers by Python's
struct module, not by edged's codec.

Usage: pymodbus_server.py PORT SPEC.json

PORT 0 picks a free port. Once listening on 127.0.0.1 the server prints one
line, "ready PORT", and serves until it is killed or its stdin closes (so it
cannot outlive the test that started it).

SPEC is a JSON file:

  {"units": {"1": {
      "size":  {"hr": 300, "ir": 100, "co": 64, "di": 64},
      "hr":    [{"address": 0, "type": "float32", "order": "CDAB", "value": 1.5},
                {"address": 9, "registers": [1, 2]},
                {"address": 20, "type": "string", "length": 5, "order": "BA", "value": "Meter"},
                {"address": 30, "type": "bcd32", "order": "CDAB", "value": 12345678}],
      "ir":    [...],
      "co":    [[0, true], [5, true]],
      "di":    [[2, true]],
      "fields": [{"table": "hr", "address": 50, "type": "string", "length": 3,
                  "order": "AB", "value": "abc"}],
      "holes": {"hr": [[40, 49]]},
      "delay": 0.3,
      "delay_once": 0.3,
      "exception": 11}}}

Every table of a unit is a block of "size" cells from address 0 (zero_mode:
address N in the request is cell N); reading past it is exception 2. A unit
with "delay" sleeps that many seconds before answering any request (the
whole server stalls: it simulates a slow device and produces late replies);
with "delay_once", only before answering its first request. "holes" are
inclusive address ranges of a table that do not exist: a request that
touches any of them is answered with exception 2 (a sparse datastore, like a
device with gaps in its map). A unit with "exception" answers every request
with that exception code (10 and 11 are what a gateway answers for a serial
device it cannot reach). "fields" are typed values like those of "hr" and
"ir", each naming its table. Requests for unit ids not in "units" get no
reply at all.

Typed values: the types of FORMATS, encoded by struct; "bcd16" and "bcd32",
the decimal digits of value one per nibble (1234 is 0x1234), then ordered
like uint16 and uint32; "string", value's UTF-8 bytes padded with NULs to
"length" registers, AB (first character in the high byte) or BA.
"""

import asyncio
import json
import logging
import os
import struct
import sys
import threading
import time

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import StartAsyncTcpServer

FORMATS = {
    "int16": ">h", "uint16": ">H",
    "int32": ">i", "uint32": ">I", "float32": ">f",
    "int64": ">q", "uint64": ">Q", "float64": ">d",
}


def string_registers(order, length, value):
    """A string field: UTF-8 bytes, NUL padded, two to a register."""
    raw = value.encode("utf-8")
    if len(raw) > 2 * length:
        raise ValueError(f"string {value!r} does not fit {length} registers")
    raw = raw.ljust(2 * length, b"\0")
    if order == "BA":
        raw = bytes(raw[i ^ 1] for i in range(len(raw)))
    elif order not in ("", "AB"):
        raise ValueError(f"string order {order!r}: AB or BA")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def registers(typ, order, value, length=0):
    """Encode value as the registers a device using this byte order holds.

    order names where the value's big-endian bytes (A = most significant)
    stand on the wire: wire byte i is big-endian byte ord(order[i]) - ord('A').
    """
    if typ == "string":
        return string_registers(order, length, value)
    if typ in ("bcd16", "bcd32"):
        digits = 4 if typ == "bcd16" else 8
        if not 0 <= value < 10**digits:
            raise ValueError(f"{value} does not fit {typ}")
        # the decimal digits, read as hexadecimal, are the nibbles
        value = int(f"{value:0{digits}d}", 16)
        typ = "uint16" if typ == "bcd16" else "uint32"
    be = struct.pack(FORMATS[typ], value)
    if not order:
        order = "ABCDEFGH"[: len(be)]
    if sorted(order) != [chr(ord("A") + i) for i in range(len(be))]:
        raise ValueError(f"order {order!r} does not fit {typ}")
    wire = bytes(be[ord(c) - ord("A")] for c in order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


class SlowBlock(ModbusSequentialDataBlock):
    """A block whose every access first sleeps, stalling the event loop."""

    def __init__(self, address, values, delay):
        super().__init__(address, values)
        self.delay = delay

    def validate(self, address, count=1):
        time.sleep(self.delay)
        return super().validate(address, count)


class OnceSlowBlock(ModbusSequentialDataBlock):
    """A block of a unit that is slow once: the unit's first access, to any
    of its blocks (they share once), sleeps; the others do not."""

    def __init__(self, address, values, once):
        super().__init__(address, values)
        self.once = once

    def validate(self, address, count=1):
        if self.once["delay"]:
            delay, self.once["delay"] = self.once["delay"], 0
            time.sleep(delay)
        return super().validate(address, count)


class HoleyBlock(ModbusSparseDataBlock):
    """A sparse block: cells 0 to size-1 except the holes, which do not
    exist (a request touching one is exception 2)."""

    def __init__(self, values, holes):
        missing = set()
        for lo, hi in holes:
            missing.update(range(lo, hi + 1))
        super().__init__({a: v for a, v in enumerate(values) if a not in missing})


def block(values, delay, once, holes):
    if holes:
        if delay or once["delay"]:
            raise ValueError("holes and delays do not mix")
        return HoleyBlock(values, holes)
    if delay:
        return SlowBlock(0, values, delay)
    if once["delay"]:
        return OnceSlowBlock(0, values, once)
    return ModbusSequentialDataBlock(0, values)


def unit_context(spec):
    size = {"hr": 100, "ir": 100, "co": 64, "di": 64}
    size.update(spec.get("size", {}))
    delay = float(spec.get("delay", 0))
    once = {"delay": float(spec.get("delay_once", 0))}
    holes = spec.get("holes", {})
    stores = {}
    for table in ("hr", "ir"):
        regs = [0] * size[table]
        items = spec.get(table, []) + [f for f in spec.get("fields", []) if f["table"] == table]
        for item in items:
            if "registers" in item:
                words = item["registers"]
            else:
                words = registers(item["type"], item.get("order", ""), item["value"], item.get("length", 0))
            a = item["address"]
            regs[a : a + len(words)] = words
        stores[table] = block(regs, delay, once, holes.get(table))
    for table in ("co", "di"):
        bits = [False] * size[table]
        for a, v in spec.get(table, []):
            bits[a] = bool(v)
        stores[table] = block(bits, delay, once, holes.get(table))
    return ModbusSlaveContext(zero_mode=True, **stores)


def exception_answers(codes):
    """A response manipulator: units in codes answer every request with
    their exception code, as a gateway does for a device it cannot reach."""

    def manipulate(response):
        code = codes.get(response.unit_id)
        if not code:
            return response, False
        exc = ExceptionResponse(response.function_code & 0x7F, code)
        exc.transaction_id = response.transaction_id
        exc.unit_id = response.unit_id
        return exc, False

    return manipulate


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


async def main():
    port = int(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        spec = json.load(f)
    slaves = {int(u): unit_context(s) for u, s in spec["units"].items()}
    codes = {int(u): int(s["exception"]) for u, s in spec["units"].items() if s.get("exception")}
    context = ModbusServerContext(slaves=slaves, single=False)
    server = await StartAsyncTcpServer(
        context=context,
        address=("127.0.0.1", port),
        defer_start=True,
        allow_reuse_address=True,
        ignore_missing_slaves=True,
        response_manipulator=exception_answers(codes) if codes else None,
    )
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    bound = server.server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    await task


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    logging.basicConfig(level=logging.CRITICAL)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main())
