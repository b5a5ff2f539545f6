"""Run by test_viewer_window.py under Xvfb: a real glfw window driven by xdotool; prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from twinstage.viewer import Viewer


def xdo(*args: str, timeout: float = 10) -> str:
    return subprocess.run(["timeout", str(timeout), "xdotool", *args], capture_output=True, text=True).stdout


def main(scene: str) -> None:
    title = f"twinstage-window-test-{os.getpid()}"
    v = Viewer(scene, frontend="glfw", size=(480, 320), title=title, labels=False)
    result: dict = {}

    def drive() -> None:
        try:
            wid = xdo("search", "--sync", "--name", title).split()
            result["window"] = bool(wid)
            if not wid:
                return
            w = wid[0]
            deadline = time.time() + 20
            while v.frames_drawn < 1 and time.time() < deadline:
                time.sleep(0.05)
            cam0 = np.array(v.camera.local.position)
            # drag with the left button: the orbit controller turns the camera
            xdo("mousemove", "--window", w, "240", "160")
            time.sleep(0.2)
            xdo("mousedown", "1")
            for x in range(250, 360, 15):
                xdo("mousemove", "--window", w, str(x), "170")
                time.sleep(0.05)
            xdo("mouseup", "1")
            time.sleep(1.0)
            cam1 = np.array(v.camera.local.position)
            result["camera_moved"] = float(np.linalg.norm(cam1 - cam0))
            # a click on an asset selects it
            x, y = v.object_screen_position("/World/Box1")
            xdo("mousemove", "--window", w, str(int(x)), str(int(y)))
            time.sleep(0.2)
            xdo("click", "1")
            time.sleep(1.0)
            result["selected"] = v.geo.objects[v.selected].path if v.selected is not None else None
            result["frames"] = v.frames_drawn
        except Exception as exc:  # reported to the test, never a hang
            result["error"] = repr(exc)
        finally:
            v.close_window()

    threading.Thread(target=drive, daemon=True).start()
    v.show()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
