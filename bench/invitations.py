"""The invitation outbox drained: invitations sent per second, and the sender's CPU per invitation, when a
backlog waits (after a mail outage, or a bulk import).

    python bench/invitations.py [--backend sqlite|postgres|both] [--size N] [--quick]

N subscriptions are saved through the domain and the invitations view enqueues one invitation each; then the
deployment's own sender (``Services.invitations``: its outbox, and the mbox file of the data dir, since no SMTP
server is configured) sends them, a batch at a time as ``ledger scheduler`` does, until none is due. Every
invitation must end ``sent`` and the mbox must hold one message per invitation, or the script exits 1.
"""

from __future__ import annotations

import mailbox
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project, not bench/

from bench import common  # noqa: E402
from commands.mail import OUTBOX_FILE_NAME  # noqa: E402
from projections.invitations import SENT, outbox  # noqa: E402
from service.bootstrap import Services  # noqa: E402

SUBSCRIPTIONS, QUICK_SUBSCRIPTIONS = 5_000, 200
BATCH = 10
"""Invitations per handover, as ``SenderThread`` sends them."""


def drain(services: Services, backend: str) -> bool:
    services.read_side.catch_up()
    wall, cpu = time.perf_counter(), time.process_time()
    sent = 0
    while done := services.invitations.send_due(BATCH):
        sent += done
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    common.show(common.rate("invitations sent", backend, f"mbox, {BATCH} a handover", sent, wall))
    common.note(f"{backend}: the sender's CPU {cpu / sent * 1000:.2f} ms per invitation ({sent} sent)")
    with services.read_side.followers["invitations"].db.snapshot() as cursor:
        states = {row.delivery.state for row in outbox(cursor)}
    box = mailbox.mbox(services.settings.data_dir / OUTBOX_FILE_NAME)
    try:
        in_box = len(box)
    finally:
        box.close()
    if states != {SENT} or in_box != sent:
        common.note(f"{backend}: FAILED: outbox states {states}, {in_box} messages in the mbox for {sent} sent")
        return False
    return True


def main() -> int:
    options = common.options(__doc__ or "")
    size = options.size or (QUICK_SUBSCRIPTIONS if options.quick else SUBSCRIPTIONS)
    common.header("the invitation outbox drained")
    ok = True
    for backend in options.backends:
        with common.deployment(backend) as services:
            common.populate(services, size, at=datetime.now(UTC).replace(microsecond=0), cancels=False)
            ok = drain(services, backend) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
