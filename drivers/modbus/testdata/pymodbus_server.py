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
                {"address": 9, "registers": [1, 2]}],
      "ir":    [...],
      "co":    [[0, true], [5, true]],
      "di":    [[2, true]],
      "delay": 0.3}}}

Every table of a unit is a block of "size" cells from address 0 (zero_mode:
address N in the request is cell N); reading past it is exception 2. A unit
with "delay" sleeps that many seconds before answering any request (the
whole server stalls: it simulates a slow device and produces late replies).
Requests for unit ids not in "units" get no reply at all.
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
)
from pymodbus.server import StartAsyncTcpServer

FORMATS = {
    "int16": ">h", "uint16": ">H",
    "int32": ">i", "uint32": ">I", "float32": ">f",
    "int64": ">q", "uint64": ">Q", "float64": ">d",
}


def registers(typ, order, value):
    """Encode value as the registers a device using this byte order holds.

    order names where the value's big-endian bytes (A = most significant)
    stand on the wire: wire byte i is big-endian byte ord(order[i]) - ord('A').
    """
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


def block(values, delay):
    if delay:
        return SlowBlock(0, values, delay)
    return ModbusSequentialDataBlock(0, values)


def unit_context(spec):
    size = {"hr": 100, "ir": 100, "co": 64, "di": 64}
    size.update(spec.get("size", {}))
    delay = float(spec.get("delay", 0))
    stores = {}
    for table in ("hr", "ir"):
        regs = [0] * size[table]
        for item in spec.get(table, []):
            if "registers" in item:
                words = item["registers"]
            else:
                words = registers(item["type"], item.get("order", ""), item["value"])
            a = item["address"]
            regs[a : a + len(words)] = words
        stores[table] = block(regs, delay)
    for table in ("co", "di"):
        bits = [False] * size[table]
        for a, v in spec.get(table, []):
            bits[a] = bool(v)
        stores[table] = block(bits, delay)
    return ModbusSlaveContext(zero_mode=True, **stores)


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


async def main():
    port = int(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        spec = json.load(f)
    slaves = {int(u): unit_context(s) for u, s in spec["units"].items()}
    context = ModbusServerContext(slaves=slaves, single=False)
    server = await StartAsyncTcpServer(
        context=context,
        address=("127.0.0.1", port),
        defer_start=True,
        allow_reuse_address=True,
        ignore_missing_slaves=True,
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
