"""Subprocess used by the SIGKILL-during-replay test: replays an outbox into a Postgres schema slowly
(a pause after each committed batch, before its file is deleted — the most dangerous moment to die).

    python -m qt_pipeline_tests.storage.hybrid.replay_worker OUTBOX_DIR URL SCHEMA PAUSE_S
"""

from __future__ import annotations

import sys
import time

from qt_pipeline.config import Settings
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore


def main() -> None:
    outbox_dir, url, schema, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    central = PostgresStore(url, Settings(), schema=schema)

    def apply(kind, frame):
        central.write_bars(frame)
        print(f"committed {len(frame)}", flush=True)
        time.sleep(pause)  # committed, file not yet deleted

    result = Outbox(outbox_dir).replay(apply)
    print(f"done {result.replayed_batches}", flush=True)


if __name__ == "__main__":
    main()
