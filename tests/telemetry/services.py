"""Real services for the telemetry tests, started by the tests themselves on loopback.

* :class:`Mosquitto` — Debian's ``/usr/sbin/mosquitto`` with a config listening on
  127.0.0.1 on a free port (``allow_anonymous true``); ``kill()`` and ``start()`` again
  on the same port for the reconnect tests.
* :class:`Postgres` — Debian's PostgreSQL 15: ``initdb`` into a fresh directory and
  ``pg_ctl start`` on a loopback port, as the ``postgres`` OS user when we are root
  (PostgreSQL refuses to run as root).
* :class:`OpcUaServer` — an asyncua *server* in a subprocess (``python services.py
  opcua PORT [CSV]``) serving SKAB-like values with source timestamps and status codes
  (Good, Uncertain, Bad), so a test can kill it and start it again.

Fixtures (import them into a test module: ``from services import mosquitto``) fail with a
clear message when the binary is missing: ``make test`` installs them (system-packages.txt via
scripts/setup-system.sh), so a missing one is a broken set-up, never a quiet skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

MOSQUITTO = os.environ.get("TWINSTAGE_MOSQUITTO", "/usr/sbin/mosquitto")
PG_BIN = Path(os.environ.get("TWINSTAGE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def need(path: str | Path, what: str) -> None:
    """Fail, naming the package, when ``path`` is not an executable."""
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{what} not found at {path} (Debian package: see system-packages.txt; scripts/setup-system.sh installs it)",
                    pytrace=False)


def binder(kind: str):
    """``binder("mqtt")(prim, attr, key, **kw)`` → a Binding of that kind (the tests' shorthand)."""
    from twinstage.telemetry import Binding

    return lambda prim, attr, key, **kw: Binding(prim, attr, kind, key, **kw)


def drain_until(inbox, until, timeout: float = 10.0, every: float = 0.01) -> list:
    """Samples drained from ``inbox`` until ``until(got)`` holds or ``timeout`` s passed."""
    got, end = [], time.monotonic() + timeout
    while not until(got) and time.monotonic() < end:
        got += inbox.drain()[0]
        time.sleep(every)
    return got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None):
        self.dir, self.port = Path(workdir), port or free_port()
        self.proc: subprocess.Popen | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )

    def start(self) -> "Mosquitto":
        log = self.dir / "mosquitto.log"
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port(self.port, proc=self.proc)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"mosquitto: {exc}\n{log.read_text(errors='replace')[-2000:]}") from None
        return self

    def kill(self) -> None:
        _stop(self.proc)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    need(MOSQUITTO, "mosquitto")
    m = Mosquitto(tmp_path).start()
    yield m
    m.kill()


class Postgres:
    """A throwaway cluster; ``dsn`` connects as the ``postgres`` superuser over TCP."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="twinstage-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=5"
        self._as = [_runuser(), "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        r = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stderr[-2000:]}")

    def start(self) -> "Postgres":
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    need(PG_BIN / "initdb", "PostgreSQL initdb")
    if os.geteuid() == 0 and not _runuser():
        pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as the postgres user")
    pg = Postgres().start()
    yield pg
    pg.stop()


def _runuser() -> str:
    """runuser lives in /usr/sbin or /sbin, which a clean PATH may not hold."""
    found = shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), "")
    return found


class OpcUaServer:
    """``python services.py opcua PORT [CSV]`` in a subprocess; ``kill()``/``start()`` keep the port."""

    def __init__(self, csv: Path | None = None, port: int | None = None, rate: float = 20.0):
        self.port, self.csv, self.rate = port or free_port(), csv, rate
        self.url = f"opc.tcp://127.0.0.1:{self.port}/twinstage/"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "OpcUaServer":
        cmd = [sys.executable, __file__, "opcua", str(self.port), str(self.csv or ""), str(self.rate)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.port, timeout=60, proc=self.proc)
        except RuntimeError as exc:
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"{exc}\n{err}") from None
        return self

    def kill(self) -> None:
        _stop(self.proc)
        self.proc = None


# -- the OPC UA server process ------------------------------------------------
# Nodes (namespace 2, string ids): Pressure (bar), Current (A), Temperature (°C),
# Flow (L/min) and Status — every value written with a SourceTimestamp. Every 7th
# update of Pressure is Uncertain (UncertainLastUsableValue), every 11th Bad
# (BadSensorFailure); Status cycles Good → Uncertain → Bad.
SIGNALS = {"Pressure": "Pressure", "Current": "Current", "Temperature": "Temperature", "Flow": "Volume Flow RateRMS"}


def _skab_rows(csv: str):
    import numpy as np

    if csv and Path(csv).is_file():
        import pandas as pd

        df = pd.read_csv(csv, sep=";")
        return {k: df[c].to_numpy(np.float64) for k, c in SIGNALS.items()}
    t = np.arange(600, dtype=np.float64)  # synthetic: SKAB-like magnitudes
    return {"Pressure": 0.2 + 0.05 * np.sin(t / 9), "Current": 1.5 + 0.2 * np.sin(t / 13), "Temperature": 70 + t / 60, "Flow": 32 + np.sin(t / 5)}


async def _serve(port: int, csv: str, rate: float) -> None:
    import asyncio
    import datetime as dt

    from asyncua import Server, ua

    data = _skab_rows(csv)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/twinstage/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:twinstage:test")
    assert idx == 2, idx
    obj = await server.nodes.objects.add_object(ua.NodeId("Testbed", idx), "Testbed")
    nodes = {k: await obj.add_variable(ua.NodeId(k, idx), k, 0.0) for k in [*SIGNALS, "Status"]}
    status = [ua.StatusCodes.Good, ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure]
    async with server:
        i = 0
        while True:
            now = dt.datetime.now(dt.timezone.utc)
            for k, node in nodes.items():
                if k == "Status":
                    v, code = float(i), status[i % 3]
                else:
                    v = float(data[k][i % len(data[k])])
                    code = ua.StatusCodes.Good
                    if k == "Pressure" and i % 11 == 10:
                        code = ua.StatusCodes.BadSensorFailure
                    elif k == "Pressure" and i % 7 == 6:
                        code = ua.StatusCodes.UncertainLastUsableValue
                dv = ua.DataValue(ua.Variant(v, ua.VariantType.Double), StatusCode=ua.StatusCode(code), SourceTimestamp=now, ServerTimestamp=now)
                await server.write_attribute_value(node.nodeid, dv)
            i += 1
            await asyncio.sleep(1.0 / rate)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "opcua":
        import asyncio
        import logging

        logging.basicConfig(level=logging.ERROR)
        asyncio.run(_serve(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "", float(sys.argv[4]) if len(sys.argv) > 4 else 20.0))
    else:
        sys.exit("usage: services.py opcua PORT [CSV] [RATE]")
