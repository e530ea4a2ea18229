"""Benchmark: signed webhook orders per second through the real intake route of `somsd run`.

    .venv/bin/python bench/intake.py [--seconds 10] [--levels 1,16,64] [--dir DIR]
        [--max-rate 3000] [--no-profile] [--no-info] [--gil] [--save-profile FILE]
        [--backend postgres [--dsn DSN] [--daemons 3 [--lease-ttl 3]]]

What it does, all in a fresh temporary directory:

1. Writes a config (`[api] listen = "127.0.0.1:0"`, an admin token file, one `[[channel]]
   kind = "webhook"` with its HMAC secret file) and starts `python -m somsd run -c ...` with
   stdout (the JSON log) going to a file. The bound URLs are read from the `http_listening`
   log events. That event is logged at info, so the daemon starts at "info" and is then
   switched to "warning" through `POST /v1/admin/reload` (the same `set_level` a SIGHUP
   applies; the listeners are not restarted because `listen` did not change), so logging does
   not dominate the figures. It is stopped with SIGTERM and must exit 0.
2. Starts a second Python process (this script with `--serve-ceiling`) serving a bare Starlette
   app through `somsd.http.serve_asgi` - the same server config as the daemon - whose only
   route, at the same path, reads the body and answers 202 with a body the size of the real
   answer: the HTTP ceiling a route can not beat in this stack.
3. For each level (concurrent connections) it pre-signs `--max-rate` x `--seconds` unique
   orders (the contract's example order with a unique `external_id`/`number` each,
   `X-Somsd-Signature` with a timestamp taken just before the run, well inside the 5-minute
   window) into a file, and runs `wrk -t1 -c<level>` with a generated Lua script that loads
   the file and sends each request once, in order. The Lua script counts answers by status;
   only 202s count as orders taken in. If wrk runs out of unique orders it starts over
   (duplicates, answered 200) and the bench says so: raise `--max-rate`. (wrk asks the script
   for one request up front and drops it, so the first id of each file is never sent.) The
   same request file then goes to the bare server.
4. Reports per level: orders/s, p50/p99 latency (wrk's, per request, closed loop), the daemon's
   CPU use (all threads, and the trio thread alone, from /proc/PID/stat and
   /proc/PID/task/PID/stat, in cores), the mean group-commit batch (from the daemon's own
   metrics), its VmRSS after the level, the bare server's rate and CPU, and the ratio.
5. Sends orders the top level took in again (fresh signatures) at the top level for half the
   time: the duplicate path (200).
6. Runs the top level again under `py-spy record` (non-blocking, 200 Hz, per thread; `--gil`
   keeps only samples of the thread holding the GIL) and summarises the trio thread: each
   sample is charged to the innermost frame of a known component (somsd.httpserver, Starlette,
   the route glue, the signature check, decoding and validation, the desk and domain, the
   store's trio side, logging, metrics); samples with no such frame are trio's scheduler and
   I/O. Then inclusive shares of named functions, and the top self functions of the trio
   thread and of the store's writer thread.
7. Starts a second daemon left at the default "info" level and measures the top level once.
8. With `--backend postgres`: starts a daemon with `[store] backend = "postgres"` (a throwaway
   cluster of Debian's server with fsync on, tests/pgcluster.py, or `--dsn`; a fresh database)
   and runs the same levels against it, beside the SQLite figures above.
9. With `--daemons N` (N > 1) as well: N daemons with `[cluster]` on one fresh database (store
   and leases), started one after the other; each level's connections are split over them,
   one wrk per daemon at once (unique orders each), so the level's rate is the sum and its
   p50/p99 the worst of the N wrk runs. Then the failover: the owner of the router
   (`core/routing`, a leased duty every member wants) is SIGKILLed and a survivor's
   `GET /v1/admin/cluster` is asked every 10 ms until another member owns it; that time is
   the failover (a dead owner's lease lapses `--lease-ttl` after its last renewal).

wrk is the Debian package (`apt-get install -y wrk`); py-spy is `pip install py-spy` into the
venv and needs root (or ptrace rights) to attach. Use --dir to put the database on the disk
under test; tmpfs would make fsync free and the numbers meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import httpx
import msgspec

from somsd.domain.testing import sample_order
from somsd.signing import SIGNATURE_HEADER, sign

ROOT = Path(__file__).resolve().parent.parent

CHANNEL = "bench"
INTAKE_PATH = f"/v1/channels/{CHANNEL}/orders"
ADMIN_TOKEN = "bench-admin-token-2c9e41"
CHANNEL_SECRET = "bench-hmac-key-8d0f17c2"
START_TIMEOUT = 20.0
ID_PLACEHOLDER = b"@@EXTERNAL_ID@@"
# The bare server answers with a body the size of the real 202 (`Accepted`).
BARE_ANSWER = b'{"order_id":"o0123456789abcdef","duplicate":false}'
RESULT_MARK = "INTAKE-RESULT "
TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_RATE = 200  # py-spy samples per second

# Loads "<signature>\t<body>" lines, pre-formats one request per line, sends each once in
# order (starting over only when they run out, which `overflow` counts), counts statuses.
LUA = r"""
local prepared = {}
local total = 0
local position = 1
statuses = {}
overflow = 0

function init(args)
  for line in io.lines(args[1]) do
    local tab = string.find(line, "\t", 1, true)
    local headers = {["Content-Type"] = "application/json"}
    headers["X-Somsd-Signature"] = string.sub(line, 1, tab - 1)
    total = total + 1
    prepared[total] = wrk.format("POST", nil, headers, string.sub(line, tab + 1))
  end
end

function request()
  if position > total then
    overflow = overflow + 1
    position = 1
  end
  local r = prepared[position]
  position = position + 1
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, sent)
  local counts = {}
  local wrapped = 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    wrapped = wrapped + thread:get("overflow")
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'INTAKE-RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"overflow":%d,"errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, wrapped, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
"""


# -- the bare server (child process) ---------------------------------------------------------


def serve_ceiling() -> None:
    """Child process: the bare 202 route on `serve_asgi`; prints its URL, serves until killed."""
    import logging

    import structlog
    import trio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from somsd.config import ListenAddress
    from somsd.http import serve_asgi

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(BARE_ANSWER, status_code=202, media_type="application/json")

    app = Starlette(routes=[Route("/v1/channels/{channel}/orders", bare, methods=["POST"])])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_asgi(
                    app,
                    ListenAddress("127.0.0.1:0"),
                    name="bare",
                    shutdown_trigger=trio.sleep_forever,
                    task_status=task_status,
                )
            )
            print(json.dumps({"url": urls[0]}), flush=True)

    trio.run(main)


class Server(msgspec.Struct):
    url: str
    pid: int


@contextmanager
def ceiling_server() -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-ceiling"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the bare server exited before it was listening")
        yield Server(json.loads(line)["url"], process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU seconds a process (or one of its threads) used so far, from /proc."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


# -- the daemon ------------------------------------------------------------------------------


def write_config(directory: Path, level: str, store: str = "") -> Path:
    (directory / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (directory / "bench.secret").write_text(CHANNEL_SECRET + "\n")
    path = directory / "somsd.toml"
    path.write_text(
        f"""
[daemon]
data_dir = "data"
log_level = "{level}"
drain_timeout = "5s"

[api]
listen = "127.0.0.1:0"
token_file = "admin.token"

[metrics]
listen = "127.0.0.1:0"

[[channel]]
name = "{CHANNEL}"
kind = "webhook"
secret_file = "bench.secret"
{store}"""
    )
    return path


class Daemon:
    """A `somsd run` process whose stdout (the JSON log) goes to a file."""

    def __init__(self, directory: Path, level: str, store: str = "") -> None:
        directory.mkdir(parents=True)
        self.directory = directory
        self.level = level
        self.store = store  # extra TOML: the [store] table, for backend postgres
        self.config = write_config(directory, "info", store)
        self.log_path = directory / "daemon.log"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "somsd", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        self.pid = self.process.pid
        self.urls = self._wait_for_urls()
        if level != "info":
            write_config(directory, level, store)
            answer = self.admin_post("/v1/admin/reload").json()
            if not answer["applied"] or "daemon" not in answer["changed"]:
                raise RuntimeError(f"switching the log level failed: {answer}")

    def _wait_for_urls(self) -> dict[str, str]:
        deadline = time.monotonic() + START_TIMEOUT
        urls: dict[str, str] = {}
        while len(urls) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"somsd did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
            for line in self.log_path.read_text().splitlines():
                if line.startswith("<") and '"http_listening"' in line:
                    entry = json.loads(line[line.index(">") + 1 :])
                    urls[entry["listener"]] = entry["urls"][0]
        return urls

    def admin_post(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.post(self.urls["api"] + path, headers=headers, timeout=30)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.urls["metrics"] + "/metrics", timeout=30).text
        wanted = ("somsd_eventlog_batch_size_", "somsd_intake_request_seconds_")
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(wanted) and "_bucket" not in line:
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in MiB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) // 1024
        return found

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far: the whole process, and the main (trio) thread alone."""
        return cpu_seconds(self.pid), cpu_seconds(self.pid, self.pid)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


# -- requests and wrk ------------------------------------------------------------------------


TEMPLATE = msgspec.json.encode(sample_order(external_id=ID_PLACEHOLDER.decode()))


def write_requests(path: Path, ids: list[str], key: bytes) -> int:
    """Sign one order per id with a fresh timestamp into `path`; returns the body size."""
    now = int(time.time())
    with path.open("wb") as out:
        for external_id in ids:
            body = TEMPLATE.replace(ID_PLACEHOLDER, external_id.encode())
            out.write(sign(key, body, now).encode() + b"\t" + body + b"\n")
    return len(TEMPLATE.replace(ID_PLACEHOLDER, ids[0].encode()))


class WrkResult(msgspec.Struct):
    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    max_us: int
    overflow: int
    errors: int
    statuses: dict[str, int]

    @property
    def seconds(self) -> float:
        return self.duration_us / 1e6

    def rate(self, status: int) -> float:
        return self.statuses.get(str(status), 0) / self.seconds

    def others(self, *expected: int) -> dict[str, int]:
        return {s: n for s, n in self.statuses.items() if int(s) not in expected}


def start_wrk(
    url: str, connections: int, seconds: float, requests: Path, lua: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(round(seconds), 1)}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url + INTAKE_PATH,
            "--",
            str(requests),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str]) -> WrkResult:
    output, _ = process.communicate()
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            return msgspec.json.decode(line[len(RESULT_MARK) :], type=WrkResult)
    raise RuntimeError(f"wrk printed no result:\n{output}")


def run_wrk(url: str, connections: int, seconds: float, requests: Path, lua: Path) -> WrkResult:
    return finish_wrk(start_wrk(url, connections, seconds, requests, lua))


# -- profile summary -------------------------------------------------------------------------

# (component, pattern on the frame's file name); a sample is charged to the innermost frame
# that matches one of these. Order only matters for files matching two patterns.
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("logging (structlog, somsd.logs)", re.compile(r"structlog/|somsd/logs\.py|/logging/")),
    ("metrics (prometheus_client)", re.compile(r"prometheus_client/")),
    ("signature check (signing, hmac)", re.compile(r"somsd/signing\.py|/hmac\.py|/hashlib\.py")),
    ("decode + validation (domain/order.py)", re.compile(r"somsd/domain/order\.py")),
    ("desk + domain decisions", re.compile(r"actors/order_desk\.py|somsd/domain/|somsd/actor\.py")),
    ("store, trio side (somsd/store)", re.compile(r"somsd/store/|somsd/projections/")),
    ("route glue (order_api, somsd/api)", re.compile(r"actors/order_api\.py|somsd/api\.py")),
    ("Starlette", re.compile(r"starlette/")),
    ("HTTP server (somsd.httpserver)", re.compile(r"somsd/httpserver/|httptools|somsd/http\.py")),
]
SCHEDULER = "trio scheduler + I/O (no app frame)"
FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Inclusive shares: the share of samples with this frame anywhere on the stack. Needles are
# ";<function> (<file>" so a name does not match its suffix (`_intake` vs `intake`).
INCLUSIVE = [
    ("ASGI app (Starlette and all below)", ";Starlette.__call__ (starlette/applications.py"),
    ("OrderRoutes.intake (route, all below)", ";OrderRoutes.intake (actors/order_api.py"),
    ("OrderRoutes.intake_fast (route, no Starlette)", ";OrderRoutes.intake_fast (actors/order_api"),
    ("verify_signature", ";verify_signature (somsd/signing.py"),
    ("decode_order (msgspec decode + validate)", ";decode_order (somsd/domain/order.py"),
    ("validate_order (every call)", ";validate_order (somsd/domain/order.py"),
    ("OrderDesk._receive (all below)", ";OrderDesk._receive (actors/order_desk.py"),
    ("OrderDesk.receive (intake's own task)", ";OrderDesk.receive (actors/order_desk.py"),
    ("receive_order (decision, validates again)", ";receive_order (somsd/domain/lifecycle.py"),
    ("to_new_events (encode events)", ";to_new_events (actors/order_desk.py"),
    ("_committed_events (decode stamped events)", ";OrderDesk._committed_events ("),
    ("OrderDesk._remember (fold state, cache)", ";OrderDesk._remember (actors/order_desk.py"),
    ("DeskMetrics.committed (folds state again)", ";DeskMetrics.committed (actors/order_desk.py"),
    ("new_id (secrets.token_hex)", ";new_id (actors/order_desk.py"),
    ("EventStore.append (trio side)", ";EventStore.append (somsd/store/_store.py"),
    ("log calls (structlog)", ";Logger.info (somsd/logs.py"),
    ("prometheus_client", ";prometheus_client/"),
]
# The same for the store's writer thread.
WRITER_INCLUSIVE = [
    ("BatchWriter.write", ";BatchWriter.write (somsd/store/_writer.py"),
    ("OrderBook.apply (orders projection)", ";OrderBook.apply (somsd/projections/orders.py"),
    ("OrderBook.stamp (invoice numbers)", ";OrderBook.stamp (somsd/projections/orders.py"),
    ("decode_event", ";decode_event ("),
    ("decode_state (state blob)", ";decode_state ("),
    ("domain apply (fold)", ";apply (somsd/domain/state.py"),
    ("OrderBook._update (encode state, UPDATE)", ";OrderBook._update (somsd/projections/orders.py"),
    ("immediate_transaction (BEGIN/COMMIT)", ";immediate_transaction ("),
]


class ThreadProfile(msgspec.Struct):
    label: str
    samples: int
    components: list[tuple[str, int]]
    functions: list[tuple[str, int]]  # leaf function (self) samples
    inclusive: list[tuple[str, int]]


class Profile(msgspec.Struct):
    threads: dict[str, int]  # busy samples per thread label
    main: ThreadProfile
    writer: ThreadProfile | None


def short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    match = re.search(r"/lib/python3\.\d+/(.*)", path)
    return "stdlib/" + match[1] if match else path


def parse_stack(frames: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for frame in frames:
        match = FRAME.match(frame)
        parsed.append((match["name"], short(match["file"])) if match else (frame, ""))
    return parsed


def thread_profile(
    label: str,
    stacks: list[tuple[list[tuple[str, str]], int]],
    inclusive_needles: list[tuple[str, str]],
) -> ThreadProfile:
    components: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for parsed, count in stacks:
        total += count
        if parsed:
            functions[f"{parsed[-1][0]} ({parsed[-1][1]})"] += count
        charged = SCHEDULER
        for _, file in reversed(parsed):
            found = next((c for c, pattern in COMPONENTS if pattern.search(file)), None)
            if found is not None:
                charged = found
                break
        components[charged] += count
        text = "".join(f";{name} ({file}" for name, file in parsed)
        for name, needle in inclusive_needles:
            if needle in text:
                inclusive[name] += count
    return ThreadProfile(
        label,
        total,
        components.most_common(),
        functions.most_common(15),
        [(name, inclusive[name]) for name, _ in inclusive_needles],
    )


def summarise_profile(raw: Path) -> Profile:
    """Read py-spy's raw (collapsed) output: `thread (TID): name;frame;frame count` lines."""
    per_thread: Counter[str] = Counter()
    stacks: dict[str, list[tuple[list[tuple[str, str]], int]]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        per_thread[thread] += int(count)
        stacks.setdefault(thread, []).append((parse_stack(frames), int(count)))
    main = next((t for t in per_thread if "MainThread" in t), per_thread.most_common(1)[0][0])
    # The writer: the worker thread whose samples show BatchWriter.write most often.
    write = ("BatchWriter.write", "somsd/store/_writer.py")
    writers = Counter(
        {
            thread: sum(n for parsed, n in thread_stacks if write in parsed)
            for thread, thread_stacks in stacks.items()
            if thread != main
        }
    )
    writer = writers.most_common(1)[0][0] if writers and writers.most_common(1)[0][1] else None
    return Profile(
        dict(per_thread),
        thread_profile(main, stacks[main], INCLUSIVE),
        thread_profile(writer, stacks[writer], WRITER_INCLUSIVE) if writer else None,
    )


def print_thread(profile: ThreadProfile, components: bool) -> None:
    total = profile.samples or 1
    print(f"{profile.label}, {profile.samples} samples")
    if components:
        print("  by component (innermost known frame):")
        for component, samples in profile.components:
            print(f"    {samples / total:>6.1%}  {component}")
    print("  inclusive (function anywhere on the stack):")
    for label, samples in profile.inclusive:
        print(f"    {samples / total:>6.1%}  {label}")
    print("  top functions by self samples:")
    for function, samples in profile.functions:
        print(f"    {samples / total:>6.1%}  {function}")


def print_profile(profile: Profile, rate: int, seconds: float, *, gil: bool) -> None:
    wall = rate * seconds
    kind = "GIL-holding" if gil else "busy (non-idle)"
    print(f"\npy-spy, {rate} Hz over {seconds:g} s; {kind} samples per thread (share of wall):")
    for thread, samples in sorted(profile.threads.items(), key=lambda t: -t[1]):
        print(f"  {thread:<40} {samples:>6} ({samples / wall:>4.0%})")
    print_thread(profile.main, components=True)
    if profile.writer is not None:
        print_thread(profile.writer, components=False)


# -- the run ---------------------------------------------------------------------------------


class Level(msgspec.Struct):
    label: str
    connections: int
    orders: WrkResult
    expected: int  # the status a successful request gets: 202, or 200 for duplicates
    cpu: float  # daemon CPU seconds per wall second, all threads
    trio_cpu: float  # the main thread's
    batch: float  # mean requests per group commit
    rss_mib: int
    bare: WrkResult | None = None
    bare_cpu: float = 0.0


class Bench:
    def __init__(self, work: Path, seconds: float, count: int, bare: Server | None) -> None:
        self.gil = False  # py-spy --gil: only samples of the thread holding the GIL
        self.save_profile: Path | None = None
        self.work = work
        self.seconds = seconds
        self.count = count
        self.bare = bare
        self.lua = work / "intake.lua"
        self.lua.write_text(LUA)

    def requests(self, name: str, ids: list[str]) -> Path:
        path = self.work / f"requests-{name}.txt"
        write_requests(path, ids, CHANNEL_SECRET.encode())
        return path

    def wrk(self, url: str, connections: int, requests: Path, seconds: float = 0) -> WrkResult:
        return run_wrk(url, connections, seconds or self.seconds, requests, self.lua)

    def level(
        self, daemon: Daemon, connections: int, tag: str, *, ids: list[str] | None = None
    ) -> Level:
        """One wrk run against the daemon (unique orders unless `ids` repeats accepted ones)."""
        duplicates = ids is not None
        ids = ids or [f"{tag}-{n:07d}" for n in range(self.count)]
        requests = self.requests(tag, ids)
        metrics = daemon.metrics()
        cpu, trio_cpu = daemon.cpu_seconds()
        started = time.monotonic()
        seconds = self.seconds / 2 if duplicates else self.seconds
        orders = self.wrk(daemon.urls["api"], connections, requests, seconds)
        wall = time.monotonic() - started
        cpu_after, trio_after = daemon.cpu_seconds()
        after = daemon.metrics()
        batches, appends = (
            after.get(f"somsd_eventlog_batch_size_{k}", 0)
            - metrics.get(f"somsd_eventlog_batch_size_{k}", 0)
            for k in ("count", "sum")
        )
        level = Level(
            tag,
            connections,
            msgspec.structs.replace(orders, overflow=0) if duplicates else orders,
            200 if duplicates else 202,
            (cpu_after - cpu) / wall,
            (trio_after - trio_cpu) / wall,
            appends / batches if batches else 0.0,
            daemon.memory()["VmRSS"],
        )
        if self.bare is not None and not duplicates:
            # The same requests (bodies and headers) against the bare 202 route.
            bare_cpu = cpu_seconds(self.bare.pid)
            started = time.monotonic()
            level.bare = self.wrk(self.bare.url, connections, requests)
            level.bare_cpu = (cpu_seconds(self.bare.pid) - bare_cpu) / (time.monotonic() - started)
        return level

    def profile(self, daemon: Daemon, connections: int) -> tuple[WrkResult, Profile, float]:
        """A run at `connections` with py-spy attached to the daemon for all but its edges."""
        ids = [f"P{connections}-{n:07d}" for n in range(self.count)]
        requests = self.requests("profile", ids)
        raw = self.work / "py-spy.txt"
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        sampled = max(self.seconds - 2, 1)
        wrk = start_wrk(daemon.urls["api"], connections, self.seconds, requests, self.lua)
        time.sleep(1)
        spy = subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(daemon.pid),
                "--duration",
                f"{sampled:g}",
                "--rate",
                str(PROFILE_RATE),
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(raw),
                *(["--gil"] if self.gil else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        result = finish_wrk(wrk)
        if spy.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()}")
        if self.save_profile is not None:
            shutil.copyfile(raw, self.save_profile)
        return result, summarise_profile(raw), sampled


def print_header() -> None:
    print(
        f"{'run':<10} {'conns':>5} {'orders/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} "
        f"{'trio':>5} {'batch':>6} {'RSS MiB':>8} {'bare/s':>8} {'bare cpu':>8} {'ratio':>6}  "
        "notes"
    )


def print_level(level: Level) -> None:
    orders = level.orders
    rate = orders.rate(level.expected)
    notes = []
    if orders.overflow:
        notes.append(f"RAN OUT of unique orders {orders.overflow}x: raise --max-rate")
    unexpected = orders.others(level.expected)
    if unexpected or orders.errors:
        notes.append(f"other statuses {unexpected}, socket errors {orders.errors}")
    bare = ""
    if level.bare is not None:
        ceiling = level.bare.rate(202)
        bare = f"{ceiling:>8,.0f} {level.bare_cpu:>8.0%} {rate / ceiling:>6.2f}"
    else:
        bare = f"{'-':>8} {'-':>8} {'-':>6}"
    print(
        f"{level.label:<10} {level.connections:>5} {rate:>9,.0f} "
        f"{orders.p50_us / 1e3:>7.2f} {orders.p99_us / 1e3:>7.2f} {level.cpu:>5.0%} "
        f"{level.trio_cpu:>5.0%} {level.batch:>6.1f} {level.rss_mib:>8} {bare}  "
        f"{'; '.join(notes)}"
    )


def describe_machine(directory: Path) -> str:
    cpu = "unknown CPU"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fs = subprocess.run(
        ["df", "--output=fstype", str(directory)], capture_output=True, text=True, check=False
    ).stdout.split()[-1]
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    packages = ", ".join(f"{p} {version(p)}" for p in ("httptools", "starlette", "trio", "msgspec"))
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"CPython {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {packages}, "
        f"{(wrk.stdout + wrk.stderr).split(' [')[0]}, database on {fs}"
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk run time per level")
    parser.add_argument("--levels", default="1,16,64", help="concurrent connections")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    parser.add_argument(
        "--max-rate",
        type=int,
        default=3000,
        help="unique orders pre-signed per second of run time (more than the daemon takes)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument("--no-info", action="store_true", help="skip the log_level=info run")
    parser.add_argument(
        "--gil", action="store_true", help="profile only GIL-holding samples (py-spy --gil)"
    )
    parser.add_argument(
        "--save-profile", type=Path, default=None, help="keep py-spy's raw (collapsed) stacks"
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: the levels again with the event store in PostgreSQL, beside SQLite",
    )
    parser.add_argument("--dsn", help="PostgreSQL server to use (default: a throwaway cluster)")
    parser.add_argument(
        "--daemons", type=int, default=1, help="postgres: also N daemons in one [cluster]"
    )
    parser.add_argument(
        "--lease-ttl", type=float, default=3.0, help="the cluster's lease_ttl in seconds"
    )
    parser.add_argument("--serve-ceiling", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:
        serve_ceiling()
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    levels = [int(n) for n in args.levels.split(",")]
    top = levels[-1]
    count = int(args.max_rate * args.seconds)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="somsd-intake-") as tmp:
        work = Path(tmp)
        print(describe_machine(work))
        print(f"load average at start: {load()}")
        body = len(TEMPLATE.replace(ID_PLACEHOLDER, b"L1-0000000"))
        print(
            f"body {body} B (contract example order, 1 line), {SIGNATURE_HEADER} HMAC-SHA256, "
            f"wrk -t1, {args.seconds:g} s per run, {count:,} unique orders pre-signed per run"
        )
        profile = None
        with ceiling_server() as bare:
            bench = Bench(work, args.seconds, count, bare)
            bench.gil, bench.save_profile = args.gil, args.save_profile
            daemon = Daemon(work / "warning", "warning")
            try:
                print(f"daemon log_level=warning, idle RSS {daemon.memory()['VmRSS']} MiB")
                print_header()
                accepted: dict[int, int] = {}
                for connections in levels:
                    level = bench.level(daemon, connections, f"L{connections}")
                    accepted[connections] = level.orders.statuses.get("202", 0)
                    print_level(level)
                # The duplicate path: orders the top level took in, sent again (fresh
                # signatures); only the first half, all surely answered before that run ended.
                # Not the first: wrk asks the script for one request up front and drops it.
                ids = [f"L{top}-{n:07d}" for n in range(1, min(2000, accepted[top] // 2))]
                print_level(bench.level(daemon, top, "duplicate", ids=ids))
                if not args.no_profile:
                    spied, profile, sampled = bench.profile(daemon, top)
                    print(
                        f"under py-spy: {spied.rate(202):,.0f} orders/s at {top} connections, "
                        f"p50 {spied.p50_us / 1e3:.2f} ms, p99 {spied.p99_us / 1e3:.2f} ms"
                    )
                memory = daemon.memory()
            finally:
                code = daemon.stop()
            print(
                f"daemon (warning): VmHWM {memory['VmHWM']} MiB, VmRSS {memory['VmRSS']} MiB "
                f"before stop; SIGTERM -> exit {code}"
            )

        if not args.no_info:
            bench.bare = None
            daemon = Daemon(work / "info", "info")
            try:
                level = bench.level(daemon, top, f"info-{top}")
                memory = daemon.memory()
            finally:
                code = daemon.stop()
            print_level(level)
            log_bytes = daemon.log_path.stat().st_size
            taken = level.orders.statuses.get("202", 0)
            print(
                f"daemon (info): {log_bytes / max(taken, 1):.0f} log bytes per order to a file, "
                f"VmHWM {memory['VmHWM']} MiB; SIGTERM -> exit {code}"
            )
        if args.backend == "postgres":
            bench.bare = None
            bench_postgres(
                bench, work, levels, args.dsn, daemons=args.daemons, lease_ttl=args.lease_ttl
            )
        if profile is not None:
            print_profile(profile, PROFILE_RATE, sampled, gil=args.gil)
        print(f"load average at end: {load()}")


def bench_postgres(
    bench: Bench,
    work: Path,
    levels: list[int],
    dsn: str | None,
    *,
    daemons: int = 1,
    lease_ttl: float = 3.0,
) -> None:
    """The levels again through a daemon whose event store is PostgreSQL (and through
    `daemons` daemons in one cluster, when more than one)."""
    import psycopg
    import psycopg.conninfo

    cluster = None
    if dsn is None:
        sys.path.insert(0, str(ROOT))
        from tests.pgcluster import PgCluster

        cluster = PgCluster.start(durable=True)
        dsn = cluster.dsn()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "bench_intake"')
            conn.execute('CREATE DATABASE "bench_intake"')
            row = conn.execute("SHOW server_version").fetchone()
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
        parts["dbname"] = "bench_intake"
        directory = work / "postgres"
        directory.mkdir()
        (directory / "store.dsn").write_text(
            psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()}) + "\n"
        )
        print(
            f"[store] backend = postgres: PostgreSQL {row[0] if row else '?'} on loopback, "
            "fsync on, one daemon"
        )
        daemon = Daemon(
            directory / "daemon",
            "warning",
            '\n[store]\nbackend = "postgres"\ndsn_file = "../store.dsn"\n',
        )
        try:
            print_header()
            for connections in levels:
                print_level(bench.level(daemon, connections, f"pg-L{connections}"))
        finally:
            code = daemon.stop()
        print(f"daemon (postgres): SIGTERM -> exit {code}")
        if daemons > 1:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "bench_cluster"')
                conn.execute('CREATE DATABASE "bench_cluster"')
            parts["dbname"] = "bench_cluster"
            cluster_dsn = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})
            bench_cluster(
                bench, work / "cluster", levels, cluster_dsn, daemons=daemons, lease_ttl=lease_ttl
            )
    finally:
        if cluster is not None:
            cluster.stop()


# -- several daemons in one cluster (--daemons) ----------------------------------------------

FAILOVER_DUTY = "core/routing"  # leased on every member, whatever the config holds
FAILOVER_POLL = 0.01


def cluster_extra(member: str, lease_ttl: float) -> str:
    """The `[store]` and `[cluster]` tables of one member (both on the same DSN file)."""
    return f"""
[store]
backend = "postgres"
dsn_file = "../cluster.dsn"

[cluster]
member = "{member}"
dsn_file = "../cluster.dsn"
lease_ttl = "{lease_ttl:g}s"
renew_every = "{lease_ttl / 3:g}s"
"""


class ClusterLevel(msgspec.Struct):
    connections: int
    runs: list[WrkResult]  # one per daemon
    cpu: float  # all daemons' CPU seconds per wall second

    @property
    def rate(self) -> float:
        return sum(run.statuses.get("202", 0) for run in self.runs) / max(
            run.seconds for run in self.runs
        )


def cluster_level(bench: Bench, members: list[Daemon], connections: int) -> ClusterLevel:
    """`connections` split over the members, one wrk each, all at once."""
    shares = [
        connections // len(members) + (i < connections % len(members)) for i in range(len(members))
    ]
    runs = []
    for index, (daemon, share) in enumerate(zip(members, shares, strict=False)):
        if share:
            ids = [f"c{connections}-{index}-{n:07d}" for n in range(bench.count)]
            runs.append((daemon, share, bench.requests(f"cluster-{index}", ids)))
    cpu = sum(daemon.cpu_seconds()[0] for daemon in members)
    started = time.monotonic()
    wrks = [
        start_wrk(daemon.urls["api"], share, bench.seconds, requests, bench.lua)
        for daemon, share, requests in runs
    ]
    results = [finish_wrk(wrk) for wrk in wrks]
    wall = time.monotonic() - started
    used = sum(daemon.cpu_seconds()[0] for daemon in members) - cpu
    return ClusterLevel(connections, results, used / wall)


def print_cluster_level(label: str, level: ClusterLevel) -> None:
    notes = []
    for run in level.runs:
        if run.overflow:
            notes.append(f"RAN OUT of unique orders {run.overflow}x: raise --max-rate")
        if run.others(202) or run.errors:
            notes.append(f"other statuses {run.others(202)}, socket errors {run.errors}")
    p50 = max(run.p50_us for run in level.runs) / 1e3
    p99 = max(run.p99_us for run in level.runs) / 1e3
    print(
        f"{label:<10} {level.connections:>5} {level.rate:>9,.0f} {p50:>7.2f} {p99:>7.2f} "
        f"{level.cpu:>5.0%}  {'; '.join(notes)}"
    )


def cluster_owner(daemon: Daemon, duty: str) -> str | None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    view = httpx.get(daemon.urls["api"] + "/v1/admin/cluster", headers=headers, timeout=5).json()
    return next((lease["owner"] for lease in view["leases"] if lease["duty"] == duty), None)


def failover(members: dict[str, Daemon], lease_ttl: float) -> tuple[str, str, float]:
    """SIGKILL the owner of `FAILOVER_DUTY`; (victim, heir, seconds until a survivor reports
    another member owning it)."""
    any_member = next(iter(members.values()))
    deadline = time.monotonic() + 3 * lease_ttl + START_TIMEOUT
    while (victim := cluster_owner(any_member, FAILOVER_DUTY)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody took {FAILOVER_DUTY}")
        time.sleep(FAILOVER_POLL)
    survivor = next(d for name, d in members.items() if name != victim)
    members[victim].process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    members[victim].process.wait()
    while (heir := cluster_owner(survivor, FAILOVER_DUTY)) in (None, victim):
        if time.monotonic() > killed + 3 * lease_ttl + 10:
            raise RuntimeError(f"{FAILOVER_DUTY} was not taken over after the SIGKILL")
        time.sleep(FAILOVER_POLL)
    assert heir is not None
    return victim, heir, time.monotonic() - killed


def bench_cluster(
    bench: Bench, directory: Path, levels: list[int], dsn: str, *, daemons: int, lease_ttl: float
) -> None:
    """The levels through `daemons` members of one cluster, then the failover time."""
    directory.mkdir()
    (directory / "cluster.dsn").write_text(dsn + "\n")
    print(
        f"\n[cluster] {daemons} daemons on one fresh database (store and leases), "
        f"lease_ttl {lease_ttl:g} s, renew_every {lease_ttl / 3:g} s; load average {load()}"
    )
    members: dict[str, Daemon] = {}
    try:
        for n in range(daemons):
            name = f"m{n + 1}"
            members[name] = Daemon(directory / name, "warning", cluster_extra(name, lease_ttl))
        print(f"{'run':<10} {'conns':>5} {'orders/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5}")
        for connections in levels:
            level = cluster_level(bench, list(members.values()), connections)
            print_cluster_level(f"pg-{daemons}d", level)
        print(f"load average after the levels: {load()}")
        victim, heir, seconds = failover(members, lease_ttl)
        print(
            f"failover: SIGKILL of {victim} (owner of {FAILOVER_DUTY}) -> {heir} reports owning "
            f"it after {seconds:.2f} s (lease_ttl {lease_ttl:g} s)"
        )
    finally:
        codes = {name: daemon.stop() for name, daemon in members.items()}
    print(f"daemons (cluster): SIGTERM -> exit {codes}")


if __name__ == "__main__":
    main()
