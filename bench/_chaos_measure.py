"""After an attack: settle with the faults off, then count what went wrong.

Settling is what an operator's worker does once the storm passes: one ``firmgrant run``
with the faults off, the mail server up and accepting, until every grant the customers made
to end soon has ended and no revocation or email is left to do. Then the figures:

- lost: grants the customers made (and did not delete) that the ledger does not hold;
- duplicates: one email (same recipients, subject, text and due time) sent under two
  Message-IDs; or emails that read the same with different due times but no change of the
  grant in Salesforce to explain them. Look-alikes that a change explains (a customer who
  extended twice within a minute gets two true emails that read the same: they show
  minutes) are counted apart;
- resends: one Message-ID delivered twice (the window between SMTP's "250 OK" and the
  commit, which mail systems collapse by Message-ID);
- double: grants revoked in Salesforce more than once (the sandbox counts its API's
  revocations per record; the ledger's ``revoked`` events per grant are counted too);
- verify, full sync (a full sync after settling must change nothing: ledger == org),
  undone (a fresh cycle after settling still finds due work), tracebacks in any log.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from _chaos_world import Customers, Mail, Sandbox, Worker, firmgrant

from firmgrant.ledger import Ledger, make_engine, tally
from firmgrant.ledger.chain import read_chain_head
from firmgrant.sandbox import CONNECTION

SETTLE_SECONDS = 300
OBJECT_CONNECTION = CONNECTION  # the vendor's org's connection in the sandbox's connection.env


@dataclass
class Figures:
    scenario: str
    attacks: int = 0  # kills, restarts, outages, signals: what the scenario did to firmgrant
    grants: int = 0
    emails: int = 0
    resends: int = 0
    lookalikes: int = 0
    revocations: int = 0
    lost: int = 0
    duplicates: int = 0
    double: int = 0
    chain_ok: bool = False
    full_sync_changes: int = 0
    undone: int = 0
    tracebacks: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def bad(self) -> bool:
        return bool(
            self.lost or self.duplicates or self.double or not self.chain_ok or self.undone
            or self.full_sync_changes or self.tracebacks or self.problems
        )  # fmt: skip


def settle(env: dict[str, str], sandbox: Sandbox, mail: Mail, customers: Customers,
           database: str, logs: Path) -> list[str]:  # fmt: skip
    """Faults off, customers gone home; one worker until nothing is left to do (what went
    wrong, if anything)."""
    customers.halt.set()
    customers.join()
    problems = [customers.failure] if customers.failure else []
    sandbox.control.faults("")
    mail.refuse(None)
    worker = Worker(env, logs / "settle.log")
    ledger = Ledger(make_engine(database))
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(2)  # polling the ledger from outside, not synchronising a test
            ends = customers.deeds.last_end
            with ledger.sessions() as session:
                left = tally.unfinished(session)
            done = not (left["revocations"] or left["emails"])
            quiet = quiet + 1 if done and (ends is None or time.time() > ends + 12) else 0
    finally:
        code = worker.terminate()
        ledger.engine.dispose()
    if code != 0:
        problems.append(f"the settling worker ended with {code} on SIGTERM")
    return problems


# "in 3 hours", "2 days ago": the one part of an email that depends on when it was sent.
RELATIVE = re.compile(r"\b(in \d+ \w+|\d+ \w+ ago)\b")


def _email_key(message: EmailMessage) -> tuple[str, str, str]:
    """What makes two emails the same email to the people who get them: the recipients, the
    subject and the text, whenever it was sent (firmgrant's own ids left out)."""
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    subject = " ".join(str(message["Subject"]).split())
    return str(message["X-Envelope-To"]), RELATIVE.sub("…", subject), RELATIVE.sub("…", text)


def _grant(message_id: str) -> int:
    """The ledger's grant id a Message-ID carries."""
    found = re.match(r"<firmgrant\.(\d+)\.", message_id)
    return int(found.group(1)) if found else 0


def _unexplained(alike: dict[tuple[str, str, str], set[str]], database: str) -> int:
    """Look-alike emails beyond what their grants' changes in Salesforce explain: each
    change may bring one more email that reads the same; a bug that queues the same email
    again under a new due time brings them without one."""
    groups = [found for found in alike.values() if len(found) > 1]
    grants = sorted({_grant(m) for found in groups for m in found})
    ledger = Ledger(make_engine(database))
    try:
        with ledger.sessions() as session:
            changes = tally.changes_per_grant(session, grants)
    finally:
        ledger.engine.dispose()
    extra = 0
    for found in groups:
        mine = {_grant(m) for m in found}
        dues = {(_grant(m), _due(m)) for m in found}  # same due twice: counted as duplicates
        extra += max(0, len(dues) - len(mine) - sum(changes[g] for g in mine))
    return extra


def _due(message_id: str) -> str:
    """The due time a Message-ID carries (``firmgrant.<grant>.<kind>.<due>@…``)."""
    found = re.search(r"\.(\d+)@", message_id)
    return found.group(1) if found else message_id


def measure(figures: Figures, env: dict[str, str], sandbox: Sandbox, mail: Mail,
            customers: Customers, database: str, logs: Path) -> Figures:  # fmt: skip
    messages = mail.messages
    ids = Counter(str(m["Message-ID"]) for m in messages)
    figures.emails = len(ids)
    figures.resends = sum(n - 1 for n in ids.values())
    same: dict[tuple[str, str, str, str], set[str]] = {}
    alike: dict[tuple[str, str, str], set[str]] = {}
    for message in messages:
        key, message_id = _email_key(message), str(message["Message-ID"])
        same.setdefault((*key, _due(message_id)), set()).add(message_id)
        alike.setdefault(key, set()).add(message_id)
    figures.duplicates = sum(len(found) - 1 for found in same.values())
    figures.lookalikes = sum(len(found) - 1 for found in alike.values()) - figures.duplicates
    unexplained = _unexplained(alike, database)
    figures.duplicates += unexplained
    figures.lookalikes -= unexplained
    with (logs / "duplicates.txt").open("w") as out:  # kept with the logs when a run is bad
        for groups, title in ((same, "duplicates"), (alike, "look-alikes")):
            out.write(f"# {title}\n")
            out.writelines(f"{k}: {sorted(f)}\n" for k, f in groups.items() if len(f) > 1)

    ledger = Ledger(make_engine(database))
    try:
        with ledger.sessions() as session:
            held = tally.source_ids(session)
            ledger_double = tally.revoked_more_than_once(session)
        deeds = customers.deeds
        made = [(OBJECT_CONNECTION, rid) for rid in deeds.live_object_grants()]
        made += sorted(deeds.audit_grants)
        figures.grants = len(deeds.object_grants) + len(deeds.audit_grants)
        figures.lost = sum(1 for rid in made if rid not in held)
        stats = sandbox.stats()
        figures.revocations = int(stats["revoked_by_api"])
        api_double = {f"{OBJECT_CONNECTION}:{rid}" for rid in stats["revoked_more_than_once"]}
        figures.double = len(api_double | set(ledger_double))
        with ledger.sessions() as session:
            told = tally.history(session, OBJECT_CONNECTION, stats["revoked_more_than_once"])
        (logs / "double.txt").write_text(
            f"sandbox API: {stats['revoked_more_than_once']}\nledger events: {ledger_double}\n"
            + "".join(f"{line}\n" for line in told)
        )
        figures.undone = _undone(env, figures)
        figures.full_sync_changes = _full_sync_changes(env, ledger, figures)
    finally:
        ledger.engine.dispose()
    figures.chain_ok = firmgrant(env, "verify").returncode == 0
    figures.tracebacks = sum(log.read_text().count("Traceback") for log in logs.glob("*.log"))
    return figures


def _work_done(cycle: dict[str, Any]) -> int:
    """How much a cycle did (syncs' changes, rejections, queued and sent emails, revocations)."""
    done = sum(int(s["inserted"]) + int(s["updated"]) + int(s["deleted"]) for s in cycle["sync"])
    for job, names in (("enforce", ("rejected", "to_revoke")), ("remind", ("queued",)),
                       ("dispatch", ("sent", "failed", "undeliverable"))):  # fmt: skip
        done += sum(int((cycle[job] or {}).get(name, 0)) for name in names)
    return done + sum(int(r["revoked"]) + int(r["failed"]) for r in cycle["revoke"])


def _undone(env: dict[str, str], figures: Figures) -> int:
    run = firmgrant(env, "run", "--once", "--json")
    if run.returncode != 0:
        figures.problems.append(f"run --once after settling exited {run.returncode}")
        return 0
    return _work_done(json.loads(run.stdout))


def _full_sync_changes(env: dict[str, str], ledger: Ledger, figures: Figures) -> int:
    with ledger.sessions() as session:
        before = read_chain_head(session)[0]
    sync = firmgrant(env, "sync", "--full", "--json")
    if sync.returncode != 0:
        figures.problems.append(f"sync --full after settling exited {sync.returncode}")
    with ledger.sessions() as session:
        after = read_chain_head(session)[0]
    return after - before
