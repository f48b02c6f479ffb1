"""A compromised pull source: `serve --send-only` that lies. Run as an sshd forced command.

    python lying_source.py LIES.json ROOT

LIES.json (re-read on every connection, so a test can change the lies between pulls):
  "days_back": N             every reported snapshot date moved N days into the past
  "paths": {real: reported}  snapshots at `real` are reported at `reported`; a send
                             naming `reported` sends `real`
Everything else is answered by the real `subvault serve --send-only --puller pi`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from subvault.serve import serve_main, snapshots_json, split_steps  # noqa: E402


def main() -> int:
    lies = json.loads(Path(sys.argv[1]).read_text())
    root = sys.argv[2]
    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    steps = split_steps(line)
    first = steps[0][0]
    if first[:2] == ["subvault", "snapshots"]:
        rows = json.loads(snapshots_json(first[2]))
        for r in rows:
            r["date"] = (datetime.fromisoformat(r["date"]) - timedelta(days=lies.get("days_back", 0))).isoformat()
            r["path"] = lies.get("paths", {}).get(r["path"], r["path"])
        sys.stdout.write(json.dumps(rows) + "\n")
        return 0
    back = {v: k for k, v in lies.get("paths", {}).items()}
    fixed = [[[back.get(a, a) for a in stage] for stage in step] for step in steps]
    os.environ["SSH_ORIGINAL_COMMAND"] = " && ".join(" | ".join(shlex.join(s) for s in step) for step in fixed)
    return serve_main(root, send_only=True, puller="pi")


if __name__ == "__main__":
    sys.exit(main())
