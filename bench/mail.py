"""Benchmark: customer mails per second through the real pipeline, and the SMTP server's ceiling.

    .venv/bin/python bench/mail.py [--orders 500] [--dir DIR]

All in a fresh temporary directory (or DIR):

1. Starts the SMTP simulator (`python -m adapters.smtp`, aiosmtpd, Maildir) on loopback.
2. Ceiling: a rendered order confirmation (the real template, ~5 kB) sent in a raw `smtplib`
   loop from this process for 5 s, on one connection and then on four connections in four
   threads (the dispatcher's per-target limit): what the server takes at most.
3. Pipeline: starts `somsd run` (webhook channel, `[notify]` at the simulator, log level
   warning after start through a reload) and posts `--orders` signed card-paid orders, 16 at
   a time. Each causes two mails (confirmation and invoice): outbox row in the intake
   transaction, dispatcher, render, SMTP pool, relay. Reports the mails/s from the first post
   to the last mail in the Maildir, the intake time alone, and checks every Message-ID once.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import trio

from adapters.smtp.simulator import read_mails
from somsd.domain.lifecycle import receive_order
from somsd.domain.policy import OrderPolicy
from somsd.domain.testing import InMemoryOrderLog, sample_order
from somsd.mail import MailJob, MailSettings, Renderer, build_message, message_id_for
from somsd.signing import SIGNATURE_HEADER, sign

SECRET = "bench-hmac-key"
TOKEN = "bench-admin-token"


def start_smtp(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.smtp", "--dir", str(directory)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    return process, int(ready["port"])


def sample_mail() -> tuple[bytes, list[str]]:
    log = InMemoryOrderLog()
    now = datetime.now(UTC)
    order = sample_order(external_id="bench")
    log.commit(
        "bench",
        receive_order(
            order, order_id="bench", channel="shop", policy=OrderPolicy(), now=now, actor="bench"
        ),
    )
    job = MailJob(kind="order_confirmation", order_id="bench", key="mail/bench/x")
    settings = MailSettings(sender="Shop <shop@example.com>", shop_name="Bench Shop")
    message, envelope = build_message(job, log.state("bench"), settings, Renderer(), now=now)
    return message.as_bytes(), envelope


def ceiling(port: int, connections: int, seconds: float = 5.0) -> float:
    data, envelope = sample_mail()
    sent = [0] * connections
    deadline = time.perf_counter() + seconds

    def loop(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            while time.perf_counter() < deadline:
                smtp.sendmail("shop@example.com", envelope, data)
                sent[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(sent) / (time.perf_counter() - started)


def write_config(directory: Path, port: int) -> Path:
    (directory / "admin.token").write_text(TOKEN + "\n")
    (directory / "shop.secret").write_text(SECRET + "\n")
    config = directory / "somsd.toml"
    config.write_text(f"""
[daemon]
data_dir = "{directory / "data"}"
log_level = "info"

[api]
listen = "127.0.0.1:0"
token_file = "admin.token"

[metrics]
listen = "127.0.0.1:0"

[[channel]]
name = "shop"
kind = "webhook"
secret_file = "shop.secret"

[notify]
host = "127.0.0.1"
port = {port}
security = "none"
sender = "Bench Shop <shop@example.com>"
shop_name = "Bench Shop"
""")
    return config


def start_daemon(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"http_listening"' in line and '"api"' in line:
                entry = json.loads(line[line.index(">") + 1 :])
                return process, str(entry["urls"][0])
        time.sleep(0.05)
    raise SystemExit("somsd did not start")


async def post_orders(api: str, orders: int) -> float:
    bodies = [msgspec.json.encode(sample_order(external_id=f"b-{n}")) for n in range(orders)]
    started = time.perf_counter()
    limiter = trio.Semaphore(16)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:

        async def post(body: bytes) -> None:
            async with limiter:
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(SECRET.encode(), body, int(time.time())),
                }
                response = await client.post(
                    "/v1/channels/shop/orders", content=body, headers=headers
                )
                assert response.status_code == 202, response.text

        async with trio.open_nursery() as nursery:
            for body in bodies:
                nursery.start_soon(post, body)
    return time.perf_counter() - started


def count(directory: Path) -> int:
    return sum(len(os.listdir(directory / "mail" / sub)) for sub in ("new", "cur"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="somsd-mail-bench-"))
    smtp_dir = root / "smtp"
    server, port = start_smtp(smtp_dir)
    try:
        one = ceiling(port, 1)
        four = ceiling(port, 4)
        print(
            f"ceiling: raw smtplib to the simulator: {one:.0f} mails/s on 1 connection, "
            f"{four:.0f} mails/s on 4"
        )
        before = count(smtp_dir)
        config = write_config(root, port)
        daemon, api = start_daemon(config, root / "somsd.log")
        try:
            config.write_text(
                config.read_text().replace('log_level = "info"', 'log_level = "warning"')
            )
            httpx.post(api + "/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            started = time.perf_counter()
            intake = trio.run(post_orders, api, args.orders)
            wanted = before + 2 * args.orders
            deadline = time.monotonic() + 300
            while count(smtp_dir) < wanted and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            got = count(smtp_dir) - before
        finally:
            daemon.terminate()
            daemon.wait(30)
        ceiling_id = message_id_for("mail/bench/x", "shop@example.com")
        ids = [str(m["Message-ID"]) for m in read_mails(smtp_dir)]
        ids = [i for i in ids if i != ceiling_id]
        print(
            f"pipeline: {args.orders} orders in {intake:.2f} s ({args.orders / intake:.0f}/s "
            f"intake); {got} mails in {elapsed:.2f} s = {got / elapsed:.0f} mails/s "
            f"({got / elapsed / four:.0%} of the 4-connection ceiling)"
        )
        print(f"distinct Message-IDs: {len(set(ids))} of {len(ids)} pipeline mails")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
