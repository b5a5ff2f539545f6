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
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.deltas") >= 5 and js("return twin.glb") == "loaded",
                        30), js("return window.twin && [twin.status, twin.glb, twin.errors.map(String), twin.closeCode]")
        assert js("return twin.role") == "operator"
        assert js("return twin.meshes.size") == len(b.twin.table.prims)
        assert js("return twin.gaps") == 0
        seq = js("return twin.seq")
        assert wait_for(lambda: js("return twin.seq") > seq + 5, 20)
        stats = js("return twin.pixelStats()")
        assert stats["lit"] > 0.01 * stats["width"] * stats["height"], stats  # WebGL drew the assets
        before = js("return twin.colorOf('/Testbed/Valve1')")

        async def close_valve():
            async with Client(b.url, token=OP_SECRET) as op:
                await op.set("/Testbed/Valve1", "opening", 0.0)

        arun(close_valve())
        assert wait_for(lambda: js("return twin.value('/Testbed/Valve1', 'opening')") == 0.0, 20)
        assert wait_for(lambda: js("return twin.colorOf('/Testbed/Valve1')") != before, 10)
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


def _view_mask(png: bytes) -> "np.ndarray":
    """Pixels of the 3D view (left of the side panel) that are not the background colour."""
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)[:, :680]
    return np.abs(img - np.array([0x1B, 0x1E, 0x23])).sum(axis=2) > 24


def test_browser_client_shows_the_scene_glb(tmp_path):
    """``twinstage demo --serve``: the page loads the GLB the bridge announces (three.js GLTFLoader) and
    draws the testbed's plate, pipes, pump and tank where the camera looks, not a box per asset; a set
    recolours the valve's own node."""
    import signal

    proc, urls = _demo_live(tmp_path)
    driver = _chromium()
    js = driver.execute_script
    try:
        driver.get(urls["operator"] + "&glb=0")  # the box fallback, for comparison
        assert wait_for(lambda: js("return window.twin && twin.status") == "live", 30)
        assert js("return twin.glb") == "none" and js("return twin.nodes.size") == 0
        js("twin.render()")
        boxes = _view_mask(driver.get_screenshot_as_png())
        driver.get(urls["operator"])
        assert wait_for(lambda: js("return window.twin && twin.status") == "live" and js("return twin.glb") == "loaded", 30), js(
            "return window.twin && [twin.status, twin.glb, twin.errors.map(String)]")
        hello = js("return twin.hello")
        assert hello["glb"]["mediaType"] == "model/gltf-binary"
        nodes = set(js("return [...twin.nodes.keys()]"))
        assert {p["path"] for p in hello["prims"]} <= nodes  # every asset is a node of the GLB (extras.twinId)
        assert js("return [...twin.meshes.values()].every(o => !o.userData.box)")
        area = 680 * 497
        # each part on screen, drawn from the GLB's own geometry (the plate spans the view; a valve is small)
        for part, share in (("/Testbed/Base", 0.15), ("/Testbed/Pipes", 0.01), ("/Testbed/Pump", 0.01), ("/Testbed/Tank", 0.01), ("/Testbed/Valve1", 0.001)):
            lit = js("return twin.partPixels(arguments[0]).lit", part)
            assert lit > share * area, (part, lit)
        js("twin.render()")
        png = driver.get_screenshot_as_png()
        (tmp_path / "browser-glb.png").write_bytes(png)
        real = _view_mask(png)
        inter, union = (real & boxes).sum(), (real | boxes).sum()
        assert real.sum() > 1.5 * boxes.sum() and inter / union < 0.6, (real.sum(), boxes.sum(), inter / union)  # not the boxes
        # a set recolours the valve's node (its own material: the other valve keeps its colour)
        before, other = js("return [twin.colorOf('/Testbed/Valve1'), twin.colorOf('/Testbed/Valve2')]")
        js("twin.set('/Testbed/Valve1', 'opening', 0)")
        assert wait_for(lambda: js("return twin.value('/Testbed/Valve1', 'opening')") == 0.0, 20)
        assert wait_for(lambda: js("return twin.colorOf('/Testbed/Valve1')") != before, 10)
        assert js("return twin.colorOf('/Testbed/Valve2')") == other
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
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
    # the MonoBehaviours type-check against stubs of the UnityEngine and glTFast types they use
    unity = EXAMPLES / "unity"
    lib = subprocess.run(["mcs", "-target:library", f"-out:{tmp_path / 'unity.dll'}", *(str(unity / f) for f in ("TwinProtocol.cs", "TwinGlb.cs",
                          "TwinBridgeClient.cs", "TwinGltfScene.cs")), str(cs / "UnityEngineStub.cs"), str(cs / "GltfFastStub.cs")],
                         capture_output=True, text=True, timeout=120)
    assert lib.returncode == 0, lib.stdout + lib.stderr
    b = bridge()
    run = subprocess.run(["mono", str(exe), b.url, OP_SECRET, "/Testbed/Valve1", "opening", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "DONE"
    table = b.twin.table
    assert any(ln.startswith(f"OK hello role=operator attributes={table.n_entries} prims={len(table.prims)}") for ln in lines), lines[:3]
    assert '"value":0,' in next(ln for ln in lines if ln.startswith("SENT "))  # JsonUtility writes 0.0 as 0
    assert "OK set /Testbed/Valve1.opening=0" in lines and "OK error code=not_found" in lines
    assert "OK default encoding" in lines and any(ln.startswith("OK compact seq=") for ln in lines)
    assert b.twin.get("/Testbed/Valve1", "opening") == 0.0


# -- Omniverse ---------------------------------------------------------------------------------

def test_unity_glb_reader_under_mono(bridge, pump_scene, tmp_path):
    """examples/unity/TwinGlb.cs on Mono: reads a recorded GLB's node tree and twin ids, downloads the
    GLB the live server announces (token, sha256), and finds a node for every prim of the hello."""
    if not (shutil.which("mcs") and shutil.which("mono")):
        pytest.fail("needs Debian mono-mcs + mono-runtime (system-packages.txt; make test installs them)")
    from twinstage.export import to_glb

    cs = ROOT / "tests" / "bridge" / "csharp"
    exe = tmp_path / "TwinGlbTest.exe"
    build = subprocess.run(["mcs", f"-out:{exe}", str(EXAMPLES / "unity" / "TwinProtocol.cs"), str(EXAMPLES / "unity" / "TwinGlb.cs"),
                            str(cs / "MiniJsonUtility.cs"), str(cs / "TwinGlbTest.cs")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    b = bridge()
    recorded = to_glb(pump_scene, tmp_path / "recorded.glb")  # recorded from the scene file, not the live stage
    run = subprocess.run(["mono", str(exe), str(recorded), b.url, OP_SECRET], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "DONE", lines

    def col(tag: str) -> dict[str, str]:
        return dict(ln.split(" ", 2)[1:] if ln.count(" ") >= 2 else (ln.split(" ")[1], "") for ln in lines if ln.startswith(tag + " "))

    prims = set(col("PRIM"))
    assert prims == set(b.twin.table.prims)
    assert prims <= set(col("SERVED")) and prims <= set(col("RECORDED"))
    assert col("SERVED") == col("RECORDED")  # the live server's GLB names the same nodes as the recorded one
    assert set(col("MAP")) == prims and all(v.isdigit() for v in col("MAP").values())  # each a child of the root node
    assert any("HTTP 401" in ln for ln in lines if ln.startswith("OK refused"))
    assert any("is not the announced" in ln for ln in lines if ln.startswith("OK checked"))
    assert sum(ln.startswith("OK bad glb") for ln in lines) == 3


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
