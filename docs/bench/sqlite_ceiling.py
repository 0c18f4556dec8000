#!/usr/bin/env python3
"""The SQLite ceiling for the ledger's rows (issue [10]): how many transfers per second SQLite
itself takes when handed exactly the rows a batch of 8,189 transfers writes -- the transfer rows,
the changed accounts (upserted on their primary key) and one journal entry with a binary body of
about 80 bytes per transfer -- in the node's own schema (its migrations, applied in order), with
the node's pragmas (WAL, synchronous=FULL, foreign keys on, 128 MiB cache), one transaction per
batch. No ledger rules, no reads, no idempotency check: an upper bound for any client of SQLite
on this schema. Python's sqlite3 `executemany` binds in C, so the figure is SQLite's, not
Python's (the time spent making the rows is not counted).

    python3 docs/bench/sqlite_ceiling.py [--without-account-indexes] [--seconds 10]

Prints transfers/s counted over the time inside transactions, and bytes per transfer after a
checkpoint. Compare with `tally bench ledger`'s batches of 8,189 (in process) on the same machine.
"""
import argparse, glob, os, random, sqlite3, sys, tempfile, time, uuid

here = os.path.dirname(os.path.abspath(__file__))
migrations = sorted(glob.glob(os.path.join(here, "../../crates/store/migrations/sqlite/*.sql")))
ap = argparse.ArgumentParser()
ap.add_argument("--without-account-indexes", action="store_true",
                help="drop transfers_debit and transfers_credit (what they cost)")
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--accounts", type=int, default=10_000)
args = ap.parse_args()

tmp = tempfile.mkdtemp()
db = sqlite3.connect(os.path.join(tmp, "ceiling.db"), isolation_level=None)
for pragma in ["journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON",
               "cache_size = -131072", "wal_autocheckpoint = 16384"]:
    db.execute(f"PRAGMA {pragma}")
for m in migrations:
    db.executescript(open(m).read())
if args.without_account_indexes:
    db.executescript("DROP INDEX transfers_debit; DROP INDEX transfers_credit;")

accounts = [uuid.uuid4().bytes for _ in range(args.accounts)]
db.execute("BEGIN")
db.executemany("INSERT INTO accounts (id, owner, currency, kind, flags, limit_minor, debits_pending, "
               "debits_posted, credits_pending, credits_posted, created_at) "
               "VALUES (?, 'bench', 'EUR', 'customer', 0, 0, 0, 0, 0, 0, 0)", [(a,) for a in accounts])
db.execute("COMMIT")
posted = {a: [0, 0] for a in accounts}
seq = db.execute("SELECT seq FROM journal_head").fetchone()[0]
BATCH = 8189
inside = 0.0
total = 0
at = int(time.time() * 1e6)
started = time.time()
while time.time() - started < args.seconds:
    rows, touched = [], set()
    seq += 1
    for _ in range(BATCH):
        d, c = random.sample(accounts, 2)
        amount = random.randint(1, 100)
        rows.append((uuid.uuid4().bytes, d, c, amount, at, seq))
        posted[d][0] += amount
        posted[c][1] += amount
        touched.update((d, c))
    body = os.urandom(80 * BATCH)
    t = time.time()
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO transfers (id, kind, state, debit_account, credit_account, amount_minor, "
                   "currency, memo, created_at, journal_seq) VALUES (?, 'single', 'posted', ?, ?, ?, "
                   "'EUR', '', ?, ?)", rows)
    db.executemany("INSERT INTO accounts (id, owner, currency, kind, flags, limit_minor, debits_pending, "
                   "debits_posted, credits_pending, credits_posted, created_at) "
                   "VALUES (?, 'bench', 'EUR', 'customer', 0, 0, 0, ?, 0, ?, 0) ON CONFLICT (id) DO "
                   "UPDATE SET debits_posted = excluded.debits_posted, credits_posted = excluded.credits_posted",
                   [(a, posted[a][0], posted[a][1]) for a in touched])
    db.execute("INSERT INTO journal (seq, at, kind, prev_hash, hash, body) VALUES (?, ?, 'transfers', ?, ?, ?)",
               (seq, at, os.urandom(32), os.urandom(32), body))
    db.execute("UPDATE journal_head SET seq = ? WHERE id = 1", (seq,))
    db.execute("COMMIT")
    inside += time.time() - t
    total += BATCH
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
which = "without the per-account indexes" if args.without_account_indexes else "full schema"
print(f"SQLite {sqlite3.sqlite_version}, {which}: {total} transfers in batches of {BATCH}, "
      f"{total / inside:,.0f} transfers/s inside transactions, {size / total:.0f} bytes per transfer")
