#!/usr/bin/env python3
"""The PostgreSQL ceiling for the ledger's rows (issue [10]): how many transfers per second
PostgreSQL itself takes when handed exactly the rows a batch of 8,189 transfers writes -- the
transfer rows, the changed accounts (upserted on their primary key) and one journal entry of
about 80 bytes per transfer -- in the node's own schema (its PostgreSQL migrations, applied in
order), one transaction per batch, durable commits (`synchronous_commit = on`). No ledger
rules, no reads, no idempotency check. The rows go as one multi-row `INSERT` per table (or
`COPY` for the transfers with `--copy`), written by this script to a file first and replayed
by `psql`, so the time counted is PostgreSQL's (and psql's sending), not Python's.

    python3 docs/bench/postgres_ceiling.py URL [--copy] [--batches 40]

URL is a database the script may fill (e.g. a throwaway cluster: `initdb`, `pg_ctl start`
with `shared_buffers=128MB`, as the tests' clusters run). Prints transfers/s and bytes per
transfer after a CHECKPOINT. Compare with `tally bench ledger`'s PostgreSQL batches of 8,189.
"""
import argparse, glob, os, random, subprocess, sys, tempfile, time, uuid

here = os.path.dirname(os.path.abspath(__file__))
migrations = sorted(glob.glob(os.path.join(here, "../../crates/store/migrations/postgres/*.sql")))
ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("--copy", action="store_true", help="COPY the transfer rows instead of INSERT")
ap.add_argument("--batches", type=int, default=40)
ap.add_argument("--accounts", type=int, default=10_000)
args = ap.parse_args()

def psql(*extra, **kw):
    return subprocess.run(["psql", args.url, "-v", "ON_ERROR_STOP=1", "-q", *extra],
                          check=True, capture_output=True, text=True, **kw)

for m in migrations:
    psql("-f", m)
accounts = [uuid.uuid4() for _ in range(args.accounts)]
posted = {a: [0, 0] for a in accounts}
hexb = lambda u: "\\x" + u.bytes.hex()
with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as setup:
    setup.write("INSERT INTO accounts (id, owner, currency, kind, flags, limit_minor, debits_pending, "
                "debits_posted, credits_pending, credits_posted, created_at) VALUES\n")
    setup.write(",\n".join(f"('{hexb(a)}', 'bench', 'EUR', 'customer', 0, 0, 0, 0, 0, 0, 0)" for a in accounts))
    setup.write(";\n")
psql("-f", setup.name)
BATCH = 8189
seq = 0
at = int(time.time() * 1e6)
work = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False)
for _ in range(args.batches):
    seq += 1
    rows, touched = [], set()
    for _ in range(BATCH):
        d, c = random.sample(accounts, 2)
        amount = random.randint(1, 100)
        rows.append((uuid.uuid4(), d, c, amount))
        posted[d][0] += amount
        posted[c][1] += amount
        touched.update((d, c))
    work.write("BEGIN;\n")
    if args.copy:
        work.write("COPY transfers (id, kind, state, debit_account, credit_account, amount_minor, currency, "
                   "memo, created_at, journal_seq) FROM STDIN;\n")
        for (i, d, c, amount) in rows:
            work.write(f"\\\\x{i.bytes.hex()}\tsingle\tposted\t\\\\x{d.bytes.hex()}\t\\\\x{c.bytes.hex()}\t{amount}\tEUR\t\t{at}\t{seq}\n")
        work.write("\\.\n")
    else:
        work.write("INSERT INTO transfers (id, kind, state, debit_account, credit_account, amount_minor, "
                   "currency, memo, created_at, journal_seq) VALUES\n")
        work.write(",\n".join(f"('{hexb(i)}', 'single', 'posted', '{hexb(d)}', '{hexb(c)}', {amount}, "
                              f"'EUR', '', {at}, {seq})" for (i, d, c, amount) in rows))
        work.write(";\n")
    work.write("INSERT INTO accounts (id, owner, currency, kind, flags, limit_minor, debits_pending, "
               "debits_posted, credits_pending, credits_posted, created_at) VALUES\n")
    work.write(",\n".join(f"('{hexb(a)}', 'bench', 'EUR', 'customer', 0, 0, 0, {posted[a][0]}, 0, "
                          f"{posted[a][1]}, 0)" for a in touched))
    work.write(" ON CONFLICT (id) DO UPDATE SET debits_posted = excluded.debits_posted, "
               "credits_posted = excluded.credits_posted;\n")
    work.write(f"INSERT INTO journal (seq, at, kind, prev_hash, hash, body) VALUES ({seq}, {at}, "
               f"'transfers', '\\x{os.urandom(32).hex()}', '\\x{os.urandom(32).hex()}', "
               f"'\\x{os.urandom(80 * BATCH).hex()}');\n")
    work.write(f"UPDATE journal_head SET seq = {seq} WHERE id = 1;\nCOMMIT;\n")
work.close()
started = time.time()
psql("-f", work.name)
elapsed = time.time() - started
size = psql("-At", "-c", "CHECKPOINT; SELECT pg_total_relation_size('accounts') + "
            "pg_total_relation_size('transfers') + pg_total_relation_size('journal')").stdout.split()[-1]
total = BATCH * args.batches
how = "COPY" if args.copy else "multi-row INSERT"
print(f"PostgreSQL, {how}: {total} transfers in batches of {BATCH}, {total / elapsed:,.0f} transfers/s, "
      f"{int(size) / total:.0f} bytes per transfer")
