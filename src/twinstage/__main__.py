"""``python -m twinstage``: the command line, run by the interpreter at hand (no console script needed on PATH)."""

from twinstage.cli import main

raise SystemExit(main())
