"""Harness for the client-compatibility suite: one Weir broker per session.

The broker is the real `weir` binary (env WEIR_BIN, default
<repo>/target/release/weir) started as `weir serve --data-dir TMP --listen
127.0.0.1:PORT` on a free port. It counts as ready once it answers a raw
ApiVersions v0 request; it is stopped with SIGTERM and must exit 0 (part of
the contract). Its combined stdout/stderr goes to a log file whose tail is
printed at the end of the run when anything failed.

A missing binary or kcat is a failure, not a skip: CI installs both, and a
suite that silently skips would report green against nothing.

WEIR_COMPAT_BOOTSTRAP=host:port runs the suite against a broker that is
already running instead (Apache Kafka, to check the suite's own expectations;
or a Weir started by hand). Nothing is started or stopped then.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from weir_compat import api_versions_raw

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_HOST = "127.0.0.1"
BROKER_READY_TIMEOUT_S = 60.0
BROKER_STOP_TIMEOUT_S = 30.0
# Retries only for losing the race for the chosen free port to another process.
BROKER_START_ATTEMPTS_MAX = 3
LOG_TAIL_BYTES_MAX = 30_000

# Log files of every broker started in this session, printed on failure.
_broker_logs: list[Path] = []
# The session's broker once it is up, for the per-test liveness check.
_running_broker: Broker | None = None


@dataclass
class Broker:
    host: str
    port: int
    data_dir: Path
    log_path: Path | None
    # None for an external broker (WEIR_COMPAT_BOOTSTRAP).
    process: subprocess.Popen | None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

def _read_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    if len(data) > LOG_TAIL_BYTES_MAX:
        data = b"...<cut>...\n" + data[-LOG_TAIL_BYTES_MAX:]
    return data.decode("utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((BROKER_HOST, 0))
        return sock.getsockname()[1]


def weir_binary() -> Path:
    path = Path(os.environ.get("WEIR_BIN", REPO_ROOT / "target" / "release" / "weir"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"weir binary not found or not executable at {path}; "
            "build it with `cargo build --release -p weir` or set WEIR_BIN",
            pytrace=False,
        )
    return path


def _wait_until_ready(process: subprocess.Popen, port: int) -> str | None:
    """None once the broker answers ApiVersions; otherwise why it never did."""
    deadline = time.monotonic() + BROKER_READY_TIMEOUT_S
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        exit_code = process.poll()
        if exit_code is not None:
            return f"weir exited with code {exit_code} before becoming ready"
        try:
            reply = api_versions_raw(BROKER_HOST, port, version=0, timeout_s=2.0)
        except (OSError, ValueError) as err:
            last_error = f"{type(err).__name__}: {err}"
            time.sleep(0.1)
            continue
        if reply.error_code != 0 or 18 not in reply.api_versions:
            return f"ApiVersions v0 answered with error {reply.error_code}, apis {reply.api_versions}"
        return None
    return f"not ready after {BROKER_READY_TIMEOUT_S}s (last probe: {last_error})"


def _stop(process: subprocess.Popen) -> str | None:
    """SIGTERM and wait; None on a clean exit 0, otherwise what went wrong."""
    if process.poll() is not None:
        return f"weir had already exited with code {process.returncode}"
    process.send_signal(signal.SIGTERM)
    try:
        exit_code = process.wait(timeout=BROKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"weir did not exit within {BROKER_STOP_TIMEOUT_S}s of SIGTERM (killed)"
    if exit_code != 0:
        return f"weir exited with code {exit_code} on SIGTERM, expected 0"
    return None


def start_broker(
    binary: Path,
    work_dir: Path,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
) -> Broker:
    """Starts `weir serve`. Tests that need their own broker (other
    settings, restarts on the same data) pass extra flags, environment, and
    the data directory and port to reuse."""
    failures = []
    given_dir, given_port = data_dir, port
    for attempt in range(1, BROKER_START_ATTEMPTS_MAX + 1):
        port = given_port or _free_port()
        data_dir = given_dir or work_dir / f"data-{attempt}"
        data_dir.mkdir(exist_ok=True)
        log_path = work_dir / f"weir-{len(_broker_logs)}-{attempt}.log"
        _broker_logs.append(log_path)
        # The broker reads WEIR_* variables as flag defaults; the suite tests
        # the documented defaults, so none may leak in from the caller.
        env = {key: value for key, value in os.environ.items() if not key.startswith("WEIR_")}
        env.update(extra_env or {})
        # Each broker its own ephemeral HTTP (metrics) port: several run at once.
        env.setdefault("WEIR_HTTP_LISTEN", "127.0.0.1:0")
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "serve", "--data-dir", str(data_dir), "--listen", f"{BROKER_HOST}:{port}", *extra_args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        problem = _wait_until_ready(process, port)
        if problem is None:
            return Broker(BROKER_HOST, port, data_dir, log_path, process)
        if process.poll() is None:
            process.kill()
            process.wait()
        failures.append(f"attempt {attempt} on port {port}: {problem} (log: {log_path})")
        log_text = _read_tail(log_path).lower()
        if "address already in use" not in log_text and "addrinuse" not in log_text:
            break
    # The logs themselves are printed once, in the terminal summary.
    pytest.fail("could not start weir:\n  " + "\n  ".join(failures), pytrace=False)


def _external_broker(bootstrap: str) -> Broker:
    host, _, port = bootstrap.rpartition(":")
    problem = None
    try:
        reply = api_versions_raw(host, int(port), version=0)
        if reply.error_code != 0:
            problem = f"ApiVersions v0 error {reply.error_code}"
    except (OSError, ValueError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        pytest.fail(f"external broker {bootstrap} not usable: {problem}", pytrace=False)
    return Broker(host, int(port), Path(), None, None)


@pytest.fixture(scope="session")
def broker(request):
    global _running_broker
    external = os.environ.get("WEIR_COMPAT_BOOTSTRAP")
    if external:
        yield _external_broker(external)
        return
    binary = weir_binary()
    work_dir = Path(tempfile.mkdtemp(prefix="weir-compat-"))
    started = start_broker(binary, work_dir)
    _running_broker = started
    yield started
    _running_broker = None
    problem = _stop(started.process)
    if problem is not None:
        pytest.fail(f"{problem} (log: {started.log_path})", pytrace=False)
    # Keep data and logs after a failure, for the log summary and post-mortems.
    if request.session.testsfailed == 0 and os.environ.get("WEIR_COMPAT_KEEP_DATA") != "1":
        shutil.rmtree(work_dir, ignore_errors=True)
        _broker_logs.clear()


@pytest.fixture(autouse=True)
def broker_still_running():
    """A broker crash during a test should be reported as such, not as a
    confusing client timeout in every test after it."""
    yield
    started = _running_broker
    if started is not None and started.process.poll() is not None:
        pytest.fail(f"weir exited with code {started.process.returncode} during this test", pytrace=False)


def kcat_binary() -> str:
    path = os.environ.get("KCAT_BIN") or shutil.which("kcat")
    if path is None:
        pytest.fail("kcat not found on PATH (apt-get install -y kcat) and KCAT_BIN not set", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kcat() -> str:
    return kcat_binary()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus == 0:
        return
    for log_path in _broker_logs:
        if log_path.exists():
            terminalreporter.section(f"weir broker log ({log_path})")
            terminalreporter.write_line(_read_tail(log_path))
