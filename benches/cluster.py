#!/usr/bin/env python3
"""Cluster mode: startup with stored certificates in PostgreSQL, propagation of a saved
certificate to the other replicas, report intake into PostgreSQL vs SQLite, and the database
size per 10 000 tenants.

Run through benches/cluster.sh (which builds the release binary and the bench binary); see its
--help. Not a test: it prints figures (JSON lines, then a summary on stderr) and fails only
when something never happens.
"""

import argparse
import glob
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import ACME_DIRECTORY, LIMIT, Daemon, Layout, free_port, note  # noqa: E402


class Postgres:
    """A PostgreSQL server of the bench's own in `root` (Debian's postgresql), durable as in
    production (fsync and synchronous_commit on): intake figures include the commit's flush.
    As root it runs as the postgres user, since PostgreSQL refuses root."""

    def __init__(self, root):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            sys.exit("cluster: PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = os.path.dirname(bins[-1])
        self.dir = os.path.join(root, "postgres")
        os.makedirs(self.dir)
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.run("initdb", "-D", f"{self.dir}/data", "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log", "-w",
                 "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                 "-c max_connections=200", "start")
        self.version = self.psql("postgres", "SHOW server_version")

    def run(self, program, *args):
        cmd = [os.path.join(self.bin, program), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=self.dir).stdout

    def psql(self, db, sql):
        return self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql).strip()

    def database(self, name):
        self.psql("postgres", f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop")


def bench(args, *cmd):
    """The bench binary's JSON lines."""
    out = subprocess.run([args.bench_bin, *map(str, cmd)], capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        sys.exit(f"cluster.py: {cmd[0]} failed (exit {out.returncode}); its output is above")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def replica(binary, work, url, name):
    """A replica with the ACME issuer pointed at a CA that cannot be reached (nothing is ordered:
    every stored certificate is valid), in cluster mode on `url`."""
    server = (f'acme:\n  directory: "{ACME_DIRECTORY}"\n  preflight:\n    enabled: false\n'
              f'store:\n  postgres:\n    url: "{url}"\n    replica_name: {name}\n')
    return Daemon(binary, work, server, issuer="acme")


def startup(args, pg, root):
    """(a) Seconds to serving and RSS of a replica with N certificates in PostgreSQL: the first
    replica (it becomes the leader), then a second one started beside it (a follower)."""
    url = pg.database("startup")
    filled = bench(args, "fill-certs", url, args.certs, ACME_DIRECTORY)[0]
    note(f"startup: {args.certs} certificates stored in {filled['seconds']:.1f} s")
    rows = []
    daemons = []
    try:
        for name in ("replica-a", "replica-b"):
            d = replica(args.bin, os.path.join(root, name), url, name)
            Layout("bulk", d.tenants_dir, args.certs).generate()
            daemons.append(d)
            row = {"part": "startup", "replica": name, "certificates": args.certs}
            row["start_s"] = d.start()
            served = time.monotonic()
            row["rss_serving_mib"] = d.rss_kib() / 1024
            # The last host's first handshake (one shared test certificate: not verified).
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            d.policy(ctx, args.certs - 1)
            row["last_host_s"] = time.monotonic() - served
            row["all_read_s"] = None
            while time.monotonic() - served < LIMIT:
                if any("stored certificates read" in line for line in d.lines):
                    row["all_read_s"] = row["start_s"] + time.monotonic() - served
                    break
                time.sleep(0.05)
            row["rss_mib"] = d.rss_kib() / 1024
            body, _ = d.get("/api/v1/status")
            row["role"] = (json.loads(body).get("cluster") or {}).get("role")
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        for d in daemons:
            d.stop()
    return rows


def propagation(args, pg, root):
    """(b) Milliseconds from a certificate saved (by PgCertStore, as the leader saves one) to
    every replica presenting it."""
    url = pg.database("renew")
    tenants = 10
    bench(args, "fill-certs", url, tenants, ACME_DIRECTORY)
    daemons = []
    try:
        for n in range(3):
            d = replica(args.bin, os.path.join(root, f"renew-{n}"), url, f"replica-{n}")
            Layout("bulk", d.tenants_dir, tenants).generate()
            d.start()
            daemons.append(d)
        roles = [(json.loads(d.get("/api/v1/status")[0]).get("cluster") or {}).get("role")
                 for d in daemons]
        addrs = [f"127.0.0.1:{d.https}" for d in daemons]
        rounds = bench(args, "renew", url, "mta-sts.t0000003.example", ACME_DIRECTORY, args.rounds, *addrs)
        for r in rounds:
            r["part"] = "propagation"
            r["roles"] = dict(zip(addrs, roles))
            print(json.dumps(r), flush=True)
        return rounds
    finally:
        for d in daemons:
            d.stop()


def intake(args, pg, root):
    """(c) reports/s into PostgreSQL and SQLite, the same reports, per thread count."""
    rows = []
    for threads in args.threads:
        url = pg.database(f"intake_{threads}")
        sqlite = os.path.join(root, f"intake-{threads}.sqlite3")
        for row in bench(args, "intake", url, sqlite, args.reports, threads):
            row["part"] = "intake"
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def size(args, pg, root):
    """Rows and bytes for N tenants: a certificate each and DAYS days of ORGS reports a day."""
    url = pg.database("size")
    rows = bench(args, "size", url, args.size_tenants, args.size_days, args.size_orgs)
    for row in rows:
        row["part"] = "size"
        print(json.dumps(row), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--bench-bin", required=True)
    ap.add_argument("--parts", default="intake size startup propagation")
    ap.add_argument("--certs", type=int, default=100_000)
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--threads", type=lambda s: [int(t) for t in s.split()], default=[1, 8])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size-tenants", type=int, default=10_000)
    ap.add_argument("--size-days", type=int, default=30)
    ap.add_argument("--size-orgs", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mta-stsd-cluster-bench-")
    os.chmod(root, 0o755)  # the postgres user reaches its directory inside
    pg = Postgres(root)
    note(f"PostgreSQL {pg.version} on 127.0.0.1:{pg.port}")
    parts = {"intake": intake, "size": size, "startup": startup, "propagation": propagation}
    try:
        for part in args.parts.split():
            parts[part](args, pg, root)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
