#!/usr/bin/env python3
"""mta-stsd at 10k / 100k / 1M tenants: start, memory, edits, reloads, scrapes, API and UI pages.

Run through benches/scale.sh (which builds the release binary); see its --help. Not a test:
it prints figures and fails only when the daemon misbehaves (a fetch that never shows an
edit, a daemon that never serves).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BULK_FILE_TENANTS = 10_000
POLICY_PATH = "/.well-known/mta-sts.txt"
LIMIT = 600  # seconds: upper bound on any wait
ACME_DIRECTORY = "https://127.0.0.1:9/directory"  # nothing listens: no order can be placed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tenant_line(i, mx="mx.example.net"):
    return f"- {{domain: t{i:07d}.example, mode: testing, mx: [{mx}]}}\n"


def single_tenant(i, mx):
    return f"domain: t{i:07d}.example\nmode: testing\nmx: [{mx}]\n"


def write_atomic(path, text):
    tmp = path + ".tmp~"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Layout:
    """Where tenant i lives, and how to rewrite it with another mx."""

    def __init__(self, kind, tenants_dir, n):
        self.kind, self.dir, self.n = kind, tenants_dir, n

    def generate(self):
        if self.kind == "bulk":
            for start in range(0, self.n, BULK_FILE_TENANTS):
                self.write_bulk(start, {})
        else:
            for i in range(self.n):
                with open(self.path_of(i), "w") as f:
                    f.write(single_tenant(i, "mx.example.net"))

    def path_of(self, i):
        if self.kind == "bulk":
            start = i - i % BULK_FILE_TENANTS
            return os.path.join(self.dir, f"bulk-{start:07d}.yaml")
        return os.path.join(self.dir, f"t{i:07d}.example.yaml")

    def write_bulk(self, start, changed):
        end = min(start + BULK_FILE_TENANTS, self.n)
        text = "".join(tenant_line(i, changed.get(i, "mx.example.net")) for i in range(start, end))
        write_atomic(self.path_of(start), text)

    def edit(self, i, mx):
        if self.kind == "bulk":
            self.write_bulk(i - i % BULK_FILE_TENANTS, {i: mx})
        else:
            write_atomic(self.path_of(i), single_tenant(i, mx))


class Daemon:
    def __init__(self, binary, work, extra_server="", issuer="internal"):
        self.work = work
        self.https, self.admin = free_port(), free_port()
        cfg = os.path.join(work, "config")
        os.makedirs(os.path.join(cfg, "tenants"), exist_ok=True)
        with open(os.path.join(cfg, "mta-stsd.yaml"), "w") as f:
            f.write(
                f'listen: "127.0.0.1:{self.https}"\nstate_dir: state\nissuer: {issuer}\n'
                f'admin:\n  listen: "127.0.0.1:{self.admin}"\n{extra_server}'
            )
        self.binary = binary
        self.lines = []
        self.proc = None

    @property
    def tenants_dir(self):
        return os.path.join(self.work, "config", "tenants")

    def start(self):
        """Starts the binary as the README does (relative --config); seconds until serving."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "--log-format", "json", "serve", "--config", "config"],
            cwd=self.work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        serving = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                if '"mta-stsd serving"' in line:
                    serving.set()

        threading.Thread(target=read, daemon=True).start()
        if not serving.wait(LIMIT):
            sys.exit(f"scale: the daemon did not serve within {LIMIT} s:\n{''.join(self.lines[-20:])}")
        return time.monotonic() - started

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def get(self, path, method="GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", method=method)
        started = time.monotonic()
        with urllib.request.urlopen(req, timeout=LIMIT) as resp:
            body = resp.read()
        return body, time.monotonic() - started

    def all_issued(self):
        """Seconds until no tenant waits for its certificate."""
        started = time.monotonic()
        while time.monotonic() - started < LIMIT:
            body, _ = self.get("/api/v1/tenants?ready=false&limit=1")
            if json.loads(body)["total"] == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        sys.exit("scale: certificates still pending")

    def tls(self):
        ctx = ssl.create_default_context(cafile=os.path.join(self.work, "config/state/ca/ca.crt"))
        return ctx

    def policy(self, ctx, i):
        host = f"mta-sts.t{i:07d}.example"
        with socket.create_connection(("127.0.0.1", self.https), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        return data.decode(errors="replace")

    def wait_for_mx(self, ctx, i, mx, started):
        """Seconds from `started` until tenant i's policy names `mx`."""
        while time.monotonic() - started < LIMIT:
            try:
                if f"mx: {mx}\r\n" in self.policy(ctx, i):
                    return time.monotonic() - started
            except (OSError, ssl.SSLError):
                pass  # not served yet: an unknown name is refused in the handshake
            time.sleep(0.005)
        sys.exit(f"scale: the edit of tenant {i} was never served")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def edit_times(d, layout, ctx, rounds=3):
    times = []
    for r in range(rounds):
        i = (layout.n // 2 + r * 7919) % layout.n
        mx = f"mx{r}.edit.example"
        started = time.monotonic()
        layout.edit(i, mx)
        times.append(d.wait_for_mx(ctx, i, mx, started))
    return statistics.median(times)


def measure(binary, root, kind, n, base_rss):
    work = os.path.join(root, f"{kind}-{n}")
    d = Daemon(binary, work)
    layout = Layout(kind, d.tenants_dir, n)
    t0 = time.monotonic()
    layout.generate()
    note(f"{kind} {n}: generated in {time.monotonic() - t0:.1f} s; starting")
    row = {"layout": kind, "tenants": n}
    try:
        row["start_s"] = d.start()
        row["rss_serving_mib"] = d.rss_kib() / 1024
        row["all_issued_s"] = row["start_s"] + d.all_issued()
        rss = d.rss_kib()
        row["rss_mib"] = rss / 1024
        row["kib_per_tenant"] = (rss - base_rss) / n
        ctx = d.tls()
        row["edit_s"] = edit_times(d, layout, ctx)
        body, wall = d.get("/reload", method="POST")
        row["reload_ms"] = json.loads(body)["elapsed_ms"]
        body, wall = d.get("/metrics")
        row["scrape_bytes"], row["scrape_s"] = len(body), wall
        _, row["api_page_s"] = d.get("/api/v1/tenants?limit=100")
        _, row["api_search_s"] = d.get("/api/v1/tenants?q=t00000&limit=1000")
        # The admin pages: a page of 50 in domain order, and one that filters and ranks all.
        _, row["ui_page_s"] = d.get("/ui/")
        _, row["ui_ranked_s"] = d.get("/ui/?show=expiring&sort=expiry")
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return row


def big_file(binary, root, n_big):
    """The delay a small file's edit sees while a big file is parsed, and RSS around it."""
    work = os.path.join(root, "bigfile")
    d = Daemon(binary, work)
    small = Layout("files", d.tenants_dir, 10)
    small.generate()
    out = {}
    try:
        d.start()
        d.all_issued()
        ctx = d.tls()
        out["rss_before_mib"] = d.rss_kib() / 1024
        staged = os.path.join(work, "big.yaml")
        with open(staged, "w") as f:
            f.write("".join(tenant_line(1_000_000 + i) for i in range(n_big)))
        started = time.monotonic()
        os.rename(staged, os.path.join(d.tenants_dir, "big.yaml"))
        time.sleep(0.3)  # past the debounce: the big file's reload is under way
        small_started = time.monotonic()
        small.edit(3, "mx.during.example")
        out["small_edit_during_big_s"] = d.wait_for_mx(ctx, 3, "mx.during.example", small_started)
        out["big_file_served_s"] = d.wait_for_mx(ctx, 1_000_000 + n_big - 1, "mx.example.net", started)
        d.all_issued()
        out["rss_with_big_mib"] = d.rss_kib() / 1024
        os.remove(os.path.join(d.tenants_dir, "big.yaml"))
        time.sleep(0.5)
        d.get("/reload", method="POST")
        time.sleep(10)
        out["rss_after_removal_mib"] = d.rss_kib() / 1024
        log = "".join(d.lines)
        out["log_bytes"] = len(log)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def store_certificates(work, n):
    """Fills the ACME store of `work` with a certificate for each of the n tenants' hosts: one
    key and chain made by openssl, hard-linked into every host's folder (a file takes at
    most 65 000 links), so reading and parsing each costs what a real one does."""
    certs = os.path.join(work, "config/state/certs")
    os.makedirs(certs, mode=0o700)
    os.chmod(os.path.join(work, "config/state"), 0o700)
    sources = None
    for i in range(n):
        if i % 60_000 == 0:
            sources = os.path.join(work, f"source-{i}")
            os.makedirs(sources)
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{sources}/k.pem", "-out", f"{sources}/fullchain.pem", "-days", "365",
                 "-subj", "/CN=mta-sts.example", "-addext", "subjectAltName=DNS:mta-sts.example"],
                check=True, capture_output=True)
            subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", f"{sources}/k.pem",
                            "-out", f"{sources}/privkey.pem"], check=True, capture_output=True)
            os.chmod(f"{sources}/privkey.pem", 0o600)
            with open(f"{sources}/meta.json", "w") as f:
                json.dump({"directory": ACME_DIRECTORY, "issued_at": int(time.time())}, f)
        host = os.path.join(certs, f"mta-sts.t{i:07d}.example")
        os.mkdir(host)
        for name in ("fullchain.pem", "privkey.pem", "meta.json"):
            os.link(os.path.join(sources, name), os.path.join(host, name))


def cached_acme(binary, root, n):
    """A restart with n stored ACME certificates and a CA that cannot be reached: seconds to
    serving, from serving to the last host's first handshake, and until all are read."""
    work = os.path.join(root, f"acme-{n}")
    server = f'acme:\n  directory: "{ACME_DIRECTORY}"\n  preflight:\n    enabled: false\n'
    d = Daemon(binary, work, server, issuer="acme")
    Layout("bulk", d.tenants_dir, n).generate()
    store_certificates(work, n)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # one shared test certificate
    out = {"tenants": n}
    try:
        out["start_s"] = d.start()
        served = time.monotonic()
        d.policy(ctx, n - 1)
        out["last_host_s"] = time.monotonic() - served
        while not any("stored certificates read" in line for line in d.lines):
            if time.monotonic() - served > LIMIT:
                sys.exit("scale: the stored certificates were never all read")
            time.sleep(0.05)
        out["all_read_s"] = out["start_s"] + time.monotonic() - served
        out["rss_mib"] = d.rss_kib() / 1024
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def base_rss(binary, root):
    d = Daemon(binary, os.path.join(root, "empty"))
    try:
        d.start()
        return d.rss_kib()
    finally:
        d.stop()


def scrape_all(binary, root, n):
    work = os.path.join(root, f"all-{n}")
    d = Daemon(binary, work, "metrics:\n  per_tenant: all\n")
    Layout("bulk", d.tenants_dir, n).generate()
    try:
        d.start()
        d.all_issued()
        body, wall = d.get("/metrics")
        return len(body), wall
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


def note(text):
    print(f"# {text}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tenants", default="10000 100000 1000000")
    ap.add_argument("--layouts", default="bulk files")
    ap.add_argument("--big-file", type=int, default=200_000)
    ap.add_argument("--scrape-all", type=int, default=100_000)
    ap.add_argument("--cached", default="100000 1000000")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mta-stsd-scale-")
    try:
        base = base_rss(args.bin, root)
        rows = []
        for kind in args.layouts.split():
            for n in args.tenants.split():
                rows.append(measure(args.bin, root, kind, int(n), base))
                note(json.dumps(rows[-1]))
        big = big_file(args.bin, root, args.big_file) if args.big_file else {}
        note(json.dumps(big))
        all_scrape = scrape_all(args.bin, root, args.scrape_all) if args.scrape_all else None
        cached = []
        for n in args.cached.split():
            cached.append(cached_acme(args.bin, root, int(n)))
            note(json.dumps(cached[-1]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(rows, big, all_scrape, args, base)
    for c in cached:
        print(f"ACME, {c['tenants']:,} stored certificates: serving after {c['start_s']:.2f} s; "
              f"the last host's first handshake {c['last_host_s'] * 1000:.0f} ms after that; "
              f"all read after {c['all_read_s']:.1f} s; {c['rss_mib']:.0f} MiB")


def report(rows, big, all_scrape, args, base):
    print(f"base RSS (no tenants): {base / 1024:.1f} MiB\n")
    print("| layout | tenants | start → serving | all certificates | RSS | KiB/tenant | one-tenant edit served | reload (nothing changed) | /metrics (default) | API page (100) | API search | /ui/ (50) | /ui/ expiring by expiry |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['layout']} | {r['tenants']:,} | {r['start_s']:.2f} s | {r['all_issued_s']:.1f} s | "
            f"{r['rss_mib']:.0f} MiB | {r['kib_per_tenant']:.2f} | {r['edit_s']:.2f} s | {r['reload_ms']:.0f} ms | "
            f"{r['scrape_bytes']:,} B in {r['scrape_s'] * 1000:.0f} ms | {r['api_page_s'] * 1000:.0f} ms | {r['api_search_s'] * 1000:.0f} ms | "
            f"{r['ui_page_s'] * 1000:.0f} ms | {r['ui_ranked_s'] * 1000:.0f} ms |"
        )
    if big:
        print(f"\nA {args.big_file:,}-tenant file added beside 10 small files:")
        print(f"- a small file's edit made 0.3 s after it was served after {big['small_edit_during_big_s']:.2f} s")
        print(f"- the big file's last tenant was served {big['big_file_served_s']:.2f} s after the file appeared")
        print(f"- RSS {big['rss_before_mib']:.0f} MiB before, {big['rss_with_big_mib']:.0f} MiB with it, {big['rss_after_removal_mib']:.0f} MiB 10 s after its removal")
        print(f"- log written over the whole run: {big['log_bytes']:,} bytes")
    if all_scrape:
        size, wall = all_scrape
        print(f"\n/metrics with metrics.per_tenant: all at {args.scrape_all:,} tenants: {size:,} B in {wall * 1000:.0f} ms")


if __name__ == "__main__":
    main()
