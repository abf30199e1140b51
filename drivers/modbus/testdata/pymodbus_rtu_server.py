#!/usr/bin/python3
"""A Modbus RTU server for edged's driver integration tests.

The peer of pymodbus_server.py, with RTU framing: pymodbus 3.0.0 (Debian
python3-pymodbus) answers the requests with its ModbusRtuFramer, on a serial
port (one end of a socat pty pair) or on TCP (RTU over TCP, as a serial device
server carries it). The datastore is the same as pymodbus_server.py's (the
SPEC JSON, "delay" included), built by that script's own code.

Usage: pymodbus_rtu_server.py serial DEVICE BAUD SPEC.json
       pymodbus_rtu_server.py tcp PORT SPEC.json

serial: 8 data bits, no parity, 1 stop bit (a pty refuses parity: tcsetattr
with PARENB fails with EINVAL). tcp: PORT 0 picks a free port on 127.0.0.1.
Once serving, the server prints one line, "ready DEVICE" or "ready PORT",
and serves until it is killed or its stdin closes (so it cannot outlive the
test that started it). Requests for unit ids not in "units" get no reply.
"""

import asyncio
import json
import logging
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymodbus.datastore import ModbusServerContext  # noqa: E402
from pymodbus.framer.rtu_framer import ModbusRtuFramer  # noqa: E402
from pymodbus.server import StartAsyncTcpServer  # noqa: E402
from pymodbus.server.async_io import ModbusSerialServer  # noqa: E402

from pymodbus_server import exit_when_stdin_closes, unit_context  # noqa: E402


async def serve_serial(context, device, baud):
    server = ModbusSerialServer(
        context,
        ModbusRtuFramer,
        port=device,
        baudrate=baud,
        bytesize=8,
        parity="N",
        stopbits=1,
        ignore_missing_slaves=True,
    )
    # pymodbus logs a failed open at debug level and carries on: check
    await server.start()
    if server.transport is None:
        sys.exit(f"cannot open {device} (see pymodbus's debug log)")
    print(f"ready {device}", flush=True)
    await server.serve_forever()


async def serve_tcp(context, port):
    server = await StartAsyncTcpServer(
        context=context,
        address=("127.0.0.1", port),
        framer=ModbusRtuFramer,
        defer_start=True,
        allow_reuse_address=True,
        ignore_missing_slaves=True,
    )
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    bound = server.server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    await task


def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[0] not in ("serial", "tcp") or (args[0] == "serial") != (len(args) == 4):
        sys.exit(__doc__)
    with open(args[-1], encoding="utf-8") as f:
        spec = json.load(f)
    slaves = {int(u): unit_context(s) for u, s in spec["units"].items()}
    context = ModbusServerContext(slaves=slaves, single=False)
    logging.basicConfig(level=logging.CRITICAL)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    if args[0] == "serial":
        asyncio.run(serve_serial(context, args[1], int(args[2])))
    else:
        asyncio.run(serve_tcp(context, int(args[1])))


if __name__ == "__main__":
    main()
