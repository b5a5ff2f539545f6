"""The reference clients in examples/, each against a real running server: the Python script,
the three.js page in headless Chromium, the Unity protocol code under Mono, and the Omniverse
extension's client + session-layer writer with usd-core."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _bridgeutil import OP_SECRET, VIEW_SECRET, arun, wait_for

from twinstage.bridge import Client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_python_client_example(bridge):
    b = bridge()
    out = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), b.url, "--token", OP_SECRET, "--set", "/Testbed/Valve1.opening=0.3",
                          "--prefix", "/Testbed/Valve1", "--seconds", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "set /Testbed/Valve1.opening = 0.3: ack at tick" in out.stdout
    assert "/Testbed/Valve1.opening = 0.3 1" in out.stdout
    out = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), b.url, "--token", VIEW_SECRET, "--set", "/Testbed/Valve1.opening=0.5",
                          "--seconds", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "forbidden" in out.stderr


# -- browser ---------------------------------------------------------------------------------

def _chromium():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("needs Debian chromium + chromium-driver (system-packages.txt; make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader", "--window-size=1000,640"):
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='twinstage-chromium-')}")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def test_browser_client_builds_the_scene_and_animates_from_deltas(bridge, tmp_path):
    b = bridge(http_dir=EXAMPLES / "browser")
    driver = _chromium()
    try:
        # the page is served by the bridge itself (same origin); the token goes as the first message
        driver.get(f"http://127.0.0.1:{b.port}/index.html?token={OP_SECRET}&encoding=binary")
        js = driver.execute_script
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.deltas") >= 5, 30), js(
            "return window.twin && [twin.status, twin.errors.map(String), twin.closeCode]")
        assert js("return twin.role") == "operator"
        assert js("return twin.meshes.size") == len(b.twin.table.prims)
        assert js("return twin.gaps") == 0
        seq = js("return twin.seq")
        assert wait_for(lambda: js("return twin.seq") > seq + 5, 20)
        stats = js("return twin.pixelStats()")
        assert stats["lit"] > 0.01 * stats["width"] * stats["height"], stats  # WebGL drew the assets
        before = js("return twin.meshes.get('/Testbed/Valve1').material.color.getHexString()")

        async def close_valve():
            async with Client(b.url, token=OP_SECRET) as op:
                await op.set("/Testbed/Valve1", "opening", 0.0)

        arun(close_valve())
        assert wait_for(lambda: js("return twin.value('/Testbed/Valve1', 'opening')") == 0.0, 20)
        after = js("return twin.meshes.get('/Testbed/Valve1').material.color.getHexString()")
        assert after != before
        ack = driver.execute_async_script("const done = arguments[arguments.length - 1]; twin.command('pause').then(a => done(a), e => done(String(e)))")
        assert ack["type"] == "ack" and ack["paused"] is True
        assert wait_for(lambda: b.twin.clock.paused, 10)
        driver.save_screenshot(str(tmp_path / "browser.png"))
        # JSON encoding works the same
        driver.get(f"http://127.0.0.1:{b.port}/index.html?token={VIEW_SECRET}&encoding=json&prefix=/Testbed/Pump")
        assert wait_for(lambda: js("return window.twin && twin.status") == "live", 30)
        assert js("return twin.role") == "viewer" and js("return twin.value('/Testbed/Pump', 'flowRate')") > 0
        assert js("return twin.value('/Testbed/Tank', 'level')") is None  # not subscribed
    finally:
        driver.quit()


def _demo_live(tmp_path: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """``twinstage demo --serve 0`` as ``make demo-live`` runs it (until interrupted): the process and what it printed."""
    import queue
    import re
    import threading

    proc = subprocess.Popen([sys.executable, "-u", "-m", "twinstage", "demo", "--out", str(tmp_path / "demo"), "--serve", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen = ""
    while "running until Ctrl-C" not in seen:
        try:
            seen += lines.get(timeout=120)
        except queue.Empty:
            proc.kill()
            pytest.fail(f"demo --serve printed no URL:\n{seen}")
    urls = dict(re.findall(r"browser client, (operator|viewer) .*?:\s+(http://\S+)", seen))
    assert set(urls) == {"operator", "viewer"}, seen
    return proc, urls


def test_browser_client_opened_with_the_url_demo_live_prints(tmp_path):
    """The operator URL shows live values (units as people write them) and sets a value from the page's form;
    the viewer URL says it is read-only; a wrong or missing token and a vanished server each get their reason."""
    import signal

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    proc, urls = _demo_live(tmp_path)
    driver = _chromium()
    js = driver.execute_script
    try:
        driver.get(urls["operator"])
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.deltas") >= 3, 30), js(
            "return window.twin && [twin.status, twin.reason, twin.notice, twin.closeCode]")
        assert js("return twin.role") == "operator" and js("return twin.reason") == ""
        assert not driver.find_element(By.ID, "notice").is_displayed()
        assert js("return twin.value('/Testbed/Pump', 'flowRate')") > 0
        # units in the page as a person writes them
        driver.find_element(By.CSS_SELECTOR, "tr[data-path='/Testbed/Pump']").click()
        assert wait_for(lambda: "vibration1" in driver.find_element(By.ID, "attrs").text, 10)
        rows = dict(js("return [...document.querySelectorAll('#attrs tr')].map(r => [r.cells[0].textContent, r.cells[2].textContent])"))
        assert rows["vibration1"] == "g" and rows["motorTemperature"] == "°C" and rows["flowRate"] == "L/min", rows
        from twinstage.units import format_unit

        units = ["1", "g0", "degC", "degF", "L/min", "m/s**2", "kg*m**2", "percent", "K/W", "bar", "m**-1", ""]
        assert js("return arguments[0].map(twin.formatUnit)", units) == [format_unit(u) for u in units]
        # a set from the page's form, with a unit
        Select(driver.find_element(By.ID, "setWhat")).select_by_value("/Testbed/Valve1|opening")
        driver.find_element(By.ID, "setValue").send_keys("25 percent")
        driver.find_element(By.ID, "setButton").click()
        assert wait_for(lambda: js("return twin.value('/Testbed/Valve1', 'opening')") == 0.25, 20), js("return twin.errors.map(String)")
        assert "set at tick" in driver.find_element(By.ID, "setResult").text
        driver.find_element(By.ID, "setValue").clear()
        driver.find_element(By.ID, "setValue").send_keys("7")  # outside the limits: the server's reason is shown
        driver.find_element(By.ID, "setButton").click()
        assert wait_for(lambda: "outside its limits [0.0, 1.0]" in driver.find_element(By.ID, "setResult").text, 20), \
            driver.find_element(By.ID, "setResult").text
        # the viewer URL: live, read-only, and says so
        driver.get(urls["viewer"])
        assert wait_for(lambda: js("return window.twin && twin.status") == "live", 30)
        assert js("return twin.role") == "viewer" and js("return twin.reason") == "read-only"
        assert "read-only" in driver.find_element(By.ID, "notice").text and not driver.find_element(By.ID, "setButton").is_enabled()
        # a wrong token, no token: why not connected
        base = urls["operator"].split("?")[0]
        driver.get(base + "?token=not-the-right-secret")
        assert wait_for(lambda: js("return window.twin && twin.reason") == "wrong-token", 20), js("return [twin.status, twin.reason, twin.closeCode]")
        assert "refused the token" in driver.find_element(By.ID, "notice").text and js("return twin.closeCode") == 4401
        driver.get(base)
        assert wait_for(lambda: js("return window.twin && twin.reason") == "no-token", 20), js("return [twin.status, twin.reason, twin.closeCode]")
        assert "needs a token" in driver.find_element(By.ID, "notice").text
        # the server gone
        driver.get(urls["operator"])
        assert wait_for(lambda: js("return window.twin && twin.status") == "live", 30)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops, finishes its files and exits
        assert proc.wait(60) == 0
        assert wait_for(lambda: js("return twin.reason") == "server-gone", 20), js("return [twin.status, twin.reason, twin.closeCode]")
        assert "server is gone" in driver.find_element(By.ID, "notice").text
    finally:
        driver.quit()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- Unity / Mono ------------------------------------------------------------------------------

def test_unity_protocol_code_under_mono(bridge, tmp_path):
    if not (shutil.which("mcs") and shutil.which("mono")):
        pytest.fail("needs Debian mono-mcs + mono-runtime (system-packages.txt; make test installs them)")
    cs = ROOT / "tests" / "bridge" / "csharp"
    exe = tmp_path / "TwinProtocolTest.exe"
    build = subprocess.run(["mcs", f"-out:{exe}", str(EXAMPLES / "unity" / "TwinProtocol.cs"), str(cs / "MiniJsonUtility.cs"), str(cs / "TwinProtocolTest.cs")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    # the MonoBehaviour type-checks against a stub of the UnityEngine types it uses
    lib = subprocess.run(["mcs", "-target:library", f"-out:{tmp_path / 'unity.dll'}", str(EXAMPLES / "unity" / "TwinProtocol.cs"),
                          str(EXAMPLES / "unity" / "TwinBridgeClient.cs"), str(cs / "UnityEngineStub.cs")], capture_output=True, text=True, timeout=120)
    assert lib.returncode == 0, lib.stdout + lib.stderr
    b = bridge()
    run = subprocess.run(["mono", str(exe), b.url, OP_SECRET, "/Testbed/Valve1", "opening", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "DONE"
    assert any(ln.startswith("OK hello role=operator attributes=21 prims=12") for ln in lines)
    assert '"value":0,' in next(ln for ln in lines if ln.startswith("SENT "))  # JsonUtility writes 0.0 as 0
    assert "OK set /Testbed/Valve1.opening=0" in lines and "OK error code=not_found" in lines
    assert "OK default encoding" in lines and any(ln.startswith("OK compact seq=") for ln in lines)
    assert b.twin.get("/Testbed/Valve1", "opening") == 0.0


# -- Omniverse ---------------------------------------------------------------------------------

def test_omniverse_client_writes_a_session_sublayer(bridge, tmp_path):
    from pxr import Tf, Usd

    sys.path.insert(0, str(EXAMPLES / "omniverse" / "twinstage.live"))
    try:
        from twinstage_live.client import LiveClient
        from twinstage_live.usd_writer import SessionLayerWriter
    finally:
        sys.path.pop(0)

    from twinstage.scenes import generate_factory

    scene = tmp_path / "factory.usda"
    generate_factory(4, scene, items=3)
    b = bridge(scene, rate=20)
    stage = Usd.Stage.Open(str(scene))  # "Kit's" stage: the same scene, opened separately
    root_before = stage.GetRootLayer().ExportToString()
    writer = SessionLayerWriter(stage)
    notices = []
    listener = Tf.Notice.Register(Usd.Notice.ObjectsChanged, lambda n, s: notices.append(1), stage)
    applied = []

    def on_state(up):
        writer.apply(up.indices, up.values, up.vec3_indices, up.vec3_values)
        applied.append(up)

    item = next(p for p in b.twin.table.prims if "Item" in p)
    machine = next(p for p in b.twin.table.prims if "Machines" in p)

    async def go():
        client = LiveClient(b.url, token=VIEW_SECRET, on_hello=writer.bind, on_state=on_state, retry_s=0.2)
        task = asyncio.get_running_loop().create_task(client.run())
        await asyncio.wait_for(client.connected.wait(), 20)
        while len(applied) < 10:
            await asyncio.sleep(0.05)
        async with Client(b.url, token=OP_SECRET) as op:
            await op.set(machine, "heatInput", 1234.5)
        while stage.GetPrimAtPath(machine).GetAttribute("twin:heatInput").Get() != 1234.5:
            await asyncio.sleep(0.05)
        # a dropped connection resumes (no second snapshot needed while the ring holds the frames)
        n = client.connections
        await client._ws.close()
        while client.connections == n or len(applied) < 15:
            await asyncio.sleep(0.05)
        await client.stop()
        task.cancel()
        return applied

    arun(go())
    listener.Revoke()
    assert not writer.missing
    assert stage.GetRootLayer().ExportToString() == root_before  # the scene's own layer is untouched
    assert writer.layer.identifier == stage.GetSessionLayer().subLayerPaths[0]
    # values resolve through the session sublayer: the twin's values, and the attributes they drive
    pos = stage.GetPrimAtPath(item).GetAttribute("twin:position").Get()
    assert tuple(stage.GetPrimAtPath(item).GetAttribute("xformOp:translate").Get()) == tuple(pos)
    assert writer.layer.GetAttributeAtPath(f"{machine}.twin:heatInput").default == 1234.5
    # one change notice per update: every update was one Sdf.ChangeBlock
    assert len(notices) <= writer.updates + 1 and writer.values_written > writer.updates
    assert [u.kind for u in applied].count("snapshot") == 1
    writer.detach()
    assert stage.GetPrimAtPath(machine).GetAttribute("twin:heatInput").Get() != 1234.5  # the scene's value again
