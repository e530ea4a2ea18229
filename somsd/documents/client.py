"""The daemon's side of the validator worker: start it, send XML, read reports, restart it.

Blocking by design and thread-safe: the document actor calls it from a worker thread
(`trio.to_thread.run_sync`), the benchmark and tests call it directly. The worker is started
lazily and again after it died (crash, kill, a timeout here); `restarts` counts that for the
metrics, and a request that found the worker dead is retried once on a fresh one.
`ValidatorPool` is several of them: a request takes an idle worker, so documents are checked
in parallel when the machine has the cores.
"""

from __future__ import annotations

import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import IO, Final

import msgspec

from somsd.documents.validation import ValidationReport
from somsd.documents.worker import Request, Response

__all__ = ["ValidatorPool", "ValidatorUnavailable", "ValidatorWorker", "default_validator_workers"]

_START_TIMEOUT: Final = 60.0


class ValidatorUnavailable(Exception):
    """The worker could not check the document (it died twice, or timed out)."""


class ValidatorWorker:
    def __init__(self, *, timeout: float = 30.0, python: str = sys.executable) -> None:
        self.timeout = timeout
        self.python = python
        self.restarts = 0
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._next_id = 1
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Response)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _readline(self, stream: IO[bytes], deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise TimeoutError("the validator worker did not answer in time")
        return stream.readline()

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [self.python, "-m", "somsd.documents.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        try:
            ready = self._readline(process.stdout, time.monotonic() + _START_TIMEOUT)
        except TimeoutError:
            process.kill()
            process.wait()
            raise
        if not ready:
            process.wait()
            _close_pipes(process)
            raise ValidatorUnavailable(
                f"the validator worker exited at start ({process.returncode})"
            )
        if self.starts:
            self.restarts += 1
        self.starts += 1
        return process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait()
            _close_pipes(process)

    def start(self) -> None:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()

    def _ask(self, xml: bytes) -> Response:
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        request_id = self._next_id
        self._next_id += 1
        process.stdin.write(self._encoder.encode(Request(id=request_id, xml=xml)) + b"\n")
        process.stdin.flush()
        line = self._readline(process.stdout, time.monotonic() + self.timeout)
        if not line:
            raise BrokenPipeError("the validator worker exited")
        response = self._decoder.decode(line)
        if response.id != request_id:
            raise BrokenPipeError(f"answer {response.id} for request {request_id}")
        return response

    def validate(self, xml: bytes) -> ValidationReport:
        with self._lock:
            for attempt in (1, 2):
                try:
                    response = self._ask(xml)
                except (OSError, TimeoutError, msgspec.DecodeError) as exc:
                    self._stop()
                    if attempt == 2:
                        raise ValidatorUnavailable(str(exc)) from exc
                    continue
                if response.report is None:
                    raise ValidatorUnavailable(response.error or "no report")
                return response.report
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _close_pipes(process)


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def default_validator_workers() -> int:
    """One worker per core beyond the one the daemon renders on: 1 on two cores."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


class ValidatorPool:
    """`size` validator workers behind the one-worker interface (`validate`, `restarts`)."""

    def __init__(self, size: int, *, timeout: float = 30.0, python: str = sys.executable) -> None:
        self.timeout = timeout
        self.python = python
        self._lock = threading.Lock()
        self._workers: list[ValidatorWorker] = []
        self._idle: queue.SimpleQueue[ValidatorWorker] = queue.SimpleQueue()
        self._size = 0
        self._retired_restarts = 0
        self.resize(size)

    @property
    def size(self) -> int:
        return self._size

    @property
    def restarts(self) -> int:
        with self._lock:
            return self._retired_restarts + sum(w.restarts for w in self._workers)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [pid for w in self._workers if (pid := w.pid) is not None]

    def resize(self, size: int, *, timeout: float | None = None) -> None:
        """Grow now (new workers start on first use), shrink as busy workers come back."""
        if size < 1:
            raise ValueError("a validator pool needs at least one worker")
        with self._lock:
            if timeout is not None:
                self.timeout = timeout
                for worker in self._workers:
                    worker.timeout = timeout
            self._size = size
            while len(self._workers) < size:
                worker = ValidatorWorker(timeout=self.timeout, python=self.python)
                self._workers.append(worker)
                self._idle.put(worker)
            surplus: list[ValidatorWorker] = []
            while len(self._workers) > size:
                try:
                    worker = self._idle.get_nowait()
                except queue.Empty:
                    break  # the rest are busy: retired when they come back
                self._workers.remove(worker)
                self._retired_restarts += worker.restarts
                surplus.append(worker)
        for worker in surplus:
            worker.close()

    def start(self) -> None:
        """Start every worker now (each compiles the rule sets: ~1 s), in parallel."""
        with self._lock:
            workers = list(self._workers)
        threads = [threading.Thread(target=worker.start) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for worker in workers:
            worker.start()  # raises here if one could not start (a no-op for the others)

    def _give_back(self, worker: ValidatorWorker) -> None:
        with self._lock:
            surplus = len(self._workers) > self._size
            if surplus:
                self._workers.remove(worker)
                self._retired_restarts += worker.restarts
        if surplus:
            worker.close()
        else:
            self._idle.put(worker)

    def validate(self, xml: bytes) -> ValidationReport:
        try:
            worker = self._idle.get(timeout=self.timeout * 2)
        except queue.Empty:
            raise ValidatorUnavailable("no validator worker became free in time") from None
        try:
            return worker.validate(xml)
        finally:
            self._give_back(worker)

    def close(self) -> None:
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.close()
