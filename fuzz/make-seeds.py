#!/usr/bin/env python3
"""Writes the hand-made seed corpus of every target into fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/make-seeds.py`. The seeds come from the repository's own
files (config/, tests/fixtures/) and from the hostile cases of the integration tests; files the
fuzzer adds later (named by their SHA-1) are left alone. Deterministic: gzip without a time
stamp, so re-running changes nothing.
"""
import gzip
import struct
import json
import os
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIX = ROOT / "tests" / "fixtures" / "tlsrpt"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(target: str, name: str, data) -> None:
    if isinstance(data, str):
        data = data.encode()
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


RFC = fixture("rfc-example.json")
GOOGLE = fixture("google.json")
MICROSOFT = fixture("microsoft.json")
EML = fixture("google-report.eml")
MINIMAL = json.dumps({
    "organization-name": "Example Sender",
    "date-range": {"start-datetime": "2026-01-01T00:00:00Z", "end-datetime": "2026-01-01T23:59:59Z"},
    "contact-info": "tlsrpt@sender.example",
    "report-id": "r1",
    "policies": [{
        "policy": {"policy-type": "sts", "policy-domain": "example.com",
                   "policy-string": ["version: STSv1", "mode: testing", "mx: mx1.example.com", "max_age: 86400"],
                   "mx-host": ["mx1.example.com"]},
        "summary": {"total-successful-session-count": 10, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
                             "receiving-mx-hostname": "mx1.example.com", "failed-session-count": 1}],
    }],
}, separators=(",", ":")).encode()


def tenant_file():
    for f in sorted((ROOT / "config" / "tenants").glob("*.yaml")):
        write("tenant_file", f.stem, f.read_bytes())
    t = "tenant_file"
    write(t, "bulk", "- domain: a.example\n  mode: testing\n  mx: [mx.a.example]\n"
                     "- domain: b.example\n  mode: enforce\n  mx: '*.mx.b.example'\n  max_age: 1w\n"
                     "- {domain: c.example, mode: none}\n")
    write(t, "duplicate-domain", "- {domain: a.example, mode: none}\n- {domain: A.Example, mode: none}\n")
    write(t, "idn", "domain: bücher.example\nmode: testing\nmx: [mx.bücher.example]\nmax_age: 30d\n")
    write(t, "bad-mx", "domain: example.com\nmode: enforce\nmax_age: 604800\nmx:\n  - \"*.mx.example.com\"\n"
                       "  - \"mx.*.example.com\"\n  - 198.51.100.1\n  - mx.example.com:25\n  - mx.example.com.\n"
                       "  - \"*.MX.example.com\"\n")
    write(t, "bad-domain", "domain: exa_mple.com.\nmode: testing\nmx: mx.example.com\n")
    write(t, "max-age-over", "domain: example.com\nmode: none\nmax_age: 31557601\n")
    write(t, "max-age-negative", "domain: example.com\nmode: none\nmax_age: -1\n")
    write(t, "unknown-key", "domain: example.com\nmode: testing\nmx: [m.example.com]\nmaxage: 1\n")
    write(t, "tab-indent", "domain: example.com\nmode: testing\nmx:\n\t- m.example.com\n")
    write(t, "aliases", "x: &a [mx.example.com, mx.example.com]\ndomain: example.com\nmode: testing\nmx: *a\n")
    write(t, "rua", "domain: example.com\nmode: testing\nmx: [m.example.com]\ntlsrpt:\n  rua: []\n")
    write(t, "mode-case", "domain: example.com\nmode: Enforce\nmx: [m.example.com]\n")
    write(t, "mta-sts-prefix", "domain: mta-sts.example.com\nmode: none\n")
    write(t, "flow-json", json.dumps({"domain": "example.com", "mode": "enforce", "mx": ["a.example.com"], "max_age": 604800}))


def server_file():
    t = "server_file"
    write(t, "config-example", (ROOT / "config" / "mta-stsd.yaml").read_bytes())
    write(t, "minimal", "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\n")
    write(t, "files-issuer", "listen: \"[::]:443\"\nstate_dir: /var/lib/mta-stsd\nissuer: files\n"
                             "files:\n  dir: certs\n  cert_file: tls.crt\n  key_file: tls.key\n")
    write(t, "acme", "listen: \"0.0.0.0:443\"\nstate_dir: state\nissuer: acme\npublic_hostname: mta-sts.op.example\n"
                     "acme:\n  directory: https://acme-staging-v02.api.letsencrypt.org/directory\n"
                     "  contact: [mailto:ops@op.example]\n  challenges: [tls-alpn-01, http-01]\n"
                     "  http_listen: \"0.0.0.0:80\"\n  eab: {key_id: k, hmac_key: aGVsbG8}\n"
                     "  preflight:\n    enabled: true\n    public_addresses: [192.0.2.1]\n"
                     "    nameservers: [\"192.0.2.53:53\", \"[2001:db8::53]:53\"]\n    recheck: 1h\n"
                     "  schedule:\n    max_concurrent: 2\n    orders_per_window: 10\n    window: 3h\n"
                     "    backoff_base: 1m\n    backoff_cap: 1d\n    renew_fraction: 0.33\n    order_timeout: 10m\n")
    write(t, "admin", "listen: \"127.0.0.1:8443\"\nstate_dir: state\nissuer: internal\nadmin:\n  listen: \"127.0.0.1:9000\"\n")
    write(t, "bad-limits", "listen: \"127.0.0.1:8443\"\nstate_dir: state\nissuer: internal\nlimits:\n  max_connections: 0\n"
                           "  idle_timeout: 0s\n  max_header_bytes: 12\n  handshake_timeout: 1y\n")
    write(t, "bad-listen", "listen: localhost\nstate_dir: \"\"\n")
    write(t, "tlsrpt-mail", "listen: \"127.0.0.1:8443\"\nstate_dir: state\nissuer: internal\ntlsrpt:\n  report_host: TLSRPT.Example\n"
                            "  max_compressed_bytes: 4096\n  max_decompressed_bytes: 1073741825\n"
                            "  tenant_bytes_per_day: 1000000\n  retention_days: 0\n  min_days_for_enforce: 14\n  database: /x/y.db\n"
                            "  mail:\n    trusted_authserv_ids: [mx.op.example]\n    verify_dkim: true\n    require_dkim_pass: true\n"
                            "    dns_servers: [\"192.0.2.53\"]\n")
    write(t, "tlsrpt-ok", "listen: \"127.0.0.1:8443\"\nstate_dir: state\nissuer: internal\ntls:\n  session_resumption: false\n"
                          "reload:\n  watch: false\n  debounce: 2s\n"
                          "tlsrpt:\n  report_host: tlsrpt.op.example\n  publish_endpoint: true\n"
                          "  max_compressed_bytes: 4096\n  max_decompressed_bytes: 1048576\n  total_bytes_per_day: 100000000\n"
                          "  retention_days: 30\n  mail:\n    trusted_authserv_ids: [mx.op.example]\n"
                          "    require_dkim_pass: false\n")
    write(t, "unknown-key", "listen: \"127.0.0.1:8443\"\nstate_dir: state\nissuer: internal\nlimit:\n  max_connections: 1\n")


def policy_roundtrip():
    t = "policy_roundtrip"
    # Even first byte: "mode\nmax_age\nmx..." through the tenant validation.
    write(t, "cfg-enforce", b"\x00enforce\n604800\nmx1.example.com\n*.mx.example.net")
    write(t, "cfg-testing-duration", b"\x00testing\n1w\nMAIL.Example.COM")
    write(t, "cfg-none", b"\x00none\n0")
    write(t, "cfg-idn", "\x00testing\n86400\nmx.bücher.example".encode())
    write(t, "cfg-limit", b"\x00enforce\n31557600\na.b")
    # Odd first byte: a policy body for the strict parser.
    write(t, "body-crlf", b"\x01version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.mx.example.net\r\nmax_age: 604800\r\n")
    write(t, "body-lf-ext", b"\x01version: STSv1\nmode:\ttesting \nmx: mx.example.com\nfoo-bar.1: v\xc3\xa9\nmax_age: 86400")
    write(t, "body-none", b"\x01version:STSv1\nmode:none\nmax_age:0000000001\n")
    write(t, "body-dup", b"\x01version: STSv1\nmode: none\nmode: enforce\nmax_age: 1\n")
    write(t, "body-bom", b"\x01\xef\xbb\xbfversion: STSv1\nmode: none\nmax_age: 1\n")
    write(t, "body-blank", b"\x01version: STSv1\n\nmode: none\nmax_age: 1\n")
    write(t, "body-cr", b"\x01version: STSv1\rmode: none\rmax_age: 1\r")


def tlsrpt_decode():
    t = "tlsrpt_decode"
    for name, data in [("rfc", RFC), ("google", GOOGLE), ("microsoft", MICROSOFT), ("minimal", MINIMAL)]:
        write(t, name, data)
        write(t, name + ".gz", gz(data))
    write(t, "bom", b"\xef\xbb\xbf" + MINIMAL)
    write(t, "two-members.gz", gz(MINIMAL[:40]) + gz(MINIMAL[40:]))
    write(t, "truncated.gz", gz(RFC)[: len(gz(RFC)) // 2])
    write(t, "bomb.gz", gz(b"\0" * (1 << 20)))
    write(t, "deep", b"[" * 100 + b"]" * 100)
    write(t, "invalid", b"{\"organization-name\": ")
    big = json.loads(MINIMAL)
    big["x-padding"] = "p" * 4100
    write(t, "big-unknown", json.dumps(big).encode())
    bad = json.loads(MINIMAL)
    bad["date-range"]["end-datetime"] = "2025-12-31T00:00:00Z"
    write(t, "ends-before-start", json.dumps(bad).encode())


def mail():
    t = "mail"
    write(t, "google-eml", EML)
    boundary = "b1"
    headers = ("From: TLS Reports <noreply-smtp-tls-reporting@sender.example>\r\n"
               "To: tlsrpt@example.com\r\n"
               "Subject: Report Domain: example.com Submitter: sender.example Report-ID: <r1>\r\n"
               "TLS-Report-Domain: example.com\r\nTLS-Report-Submitter: sender.example\r\n"
               "Authentication-Results: mx.example.com; dkim=pass (2048-bit key) header.d=sender.example\r\n"
               " header.s=s1; spf=pass smtp.mailfrom=sender.example\r\n"
               "MIME-Version: 1.0\r\n")
    def multipart(ctype, payload, encoding="base64", name="report.json.gz"):
        import base64
        body = base64.encodebytes(payload).decode() if encoding == "base64" else payload.decode()
        return (headers + f"Content-Type: multipart/report; report-type=tlsrpt; boundary=\"{boundary}\"\r\n\r\n"
                f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
                f"--{boundary}\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {encoding}\r\n"
                f"Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{body}\r\n--{boundary}--\r\n")
    write(t, "gzip-part", multipart("application/tlsrpt+gzip", gz(MINIMAL)))
    write(t, "json-part", multipart("application/tlsrpt+json", MINIMAL, encoding="7bit", name="report.json"))
    write(t, "octet-attachment", multipart("application/octet-stream", gz(MINIMAL)))
    # A report domain with a space before its trailing dot: normalized to "example.com".
    write(t, "report-domain-space", multipart("application/tlsrpt+json", MINIMAL, encoding="7bit", name="report.json")
          .replace("TLS-Report-Domain: example.com", "TLS-Report-Domain: Example.com ."))
    write(t, "no-report", headers + "Content-Type: text/plain\r\n\r\nhello\r\n")
    write(t, "auth-results", "Authentication-Results: mx.example.com (comment (nested)); dkim=pass header.i=@Sender.Example.;"
                             " dkim=fail header.d=\"evil.example\"; arc=none\r\n"
                             "Authentication-Results: \"quoted\"; none\r\n\r\n")
    write(t, "long-header", "Subject: " + "x" * 3000 + "\r\n\r\n")


HTTP_POLICY = [
    ("get", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"),
    ("head-port-upper", b"HEAD /.well-known/mta-sts.txt HTTP/1.1\r\nHost: MTA-STS.Example.COM.:8443\r\n\r\n"),
    ("absolute-uri", b"GET https://mta-sts.example.org/.well-known/mta-sts.txt HTTP/1.1\r\nHost: other.example\r\n\r\n"),
    ("http10-no-host", b"GET /.well-known/mta-sts.txt HTTP/1.0\r\n\r\n"),
    ("two-hosts", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\nHost: mta-sts.example.com\r\n\r\n"),
    ("post", b"POST /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\nContent-Length: 3\r\n\r\nabc"),
    ("pipelined", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"
                  b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.xn--bcher-kva.example\r\nConnection: close\r\n\r\n"),
    ("unknown-host", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.unknown.example\r\n\r\n"),
    ("chunked", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("big-header", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\nX: " + b"a" * 2000 + b"\r\n\r\n"),
    ("ipv6-host", b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"),
    ("query", b"GET /.well-known/mta-sts.txt?x=1 HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"),
    ("options-star", b"OPTIONS * HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"),
    ("bare-lf", b"GET /.well-known/mta-sts.txt HTTP/1.1\nHost: mta-sts.example.com\n\n"),
]


def http_policy():
    # The first byte picks the SNI: 0 none, 1 example.com, 2 example.org, 3 unknown.
    for i, (name, req) in enumerate(HTTP_POLICY):
        write("http_policy", name, bytes([i % 4]) + req)


def intake_http():
    t = "intake_http"
    def post(path, ctype, body, host=b"tlsrpt.operator.example", extra=b""):
        return (b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: " + ctype +
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)
    write(t, "json", post(b"/tlsrpt/example.com", b"application/tlsrpt+json", MINIMAL))
    write(t, "gzip", post(b"/tlsrpt/example.org", b"application/tlsrpt+gzip", gz(MINIMAL)))
    write(t, "rfc-gzip", post(b"/tlsrpt/Example.COM.", b"application/tlsrpt+gzip; charset=binary", gz(RFC)))
    write(t, "mislabelled", post(b"/tlsrpt/example.com", b"application/tlsrpt+json", gz(MINIMAL)))
    write(t, "unknown-tenant", post(b"/tlsrpt/unknown.example", b"application/tlsrpt+json", MINIMAL))
    write(t, "wrong-host", post(b"/tlsrpt/example.com", b"application/tlsrpt+json", MINIMAL, host=b"mta-sts.example.com"))
    write(t, "wrong-type", post(b"/tlsrpt/example.com", b"application/json", MINIMAL))
    write(t, "truncated-gzip", post(b"/tlsrpt/example.com", b"application/tlsrpt+gzip", gz(RFC)[:100]))
    write(t, "invalid-json", post(b"/tlsrpt/example.com", b"application/tlsrpt+json", b"{\"organization-name\": "))
    write(t, "declared-too-large", b"POST /tlsrpt/example.com HTTP/1.1\r\nHost: tlsrpt.operator.example\r\n"
                                   b"Content-Type: application/tlsrpt+json\r\nContent-Length: 99999999999\r\n\r\n{}")
    write(t, "short-body", b"POST /tlsrpt/example.com HTTP/1.1\r\nHost: tlsrpt.operator.example\r\n"
                           b"Content-Type: application/tlsrpt+json\r\nContent-Length: 500\r\n\r\n{}")
    write(t, "chunked", b"POST /tlsrpt/example.com HTTP/1.1\r\nHost: tlsrpt.operator.example\r\n"
                        b"Content-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + hex(len(MINIMAL))[2:].encode() + b"\r\n" + MINIMAL + b"\r\n0\r\n\r\n")
    write(t, "get", b"GET /tlsrpt/example.com HTTP/1.1\r\nHost: tlsrpt.operator.example\r\n\r\n")
    write(t, "not-found", b"POST /reports HTTP/1.1\r\nHost: tlsrpt.operator.example\r\nContent-Length: 0\r\n\r\n")
    write(t, "slash-domain", b"POST /tlsrpt/a/b HTTP/1.1\r\nHost: tlsrpt.operator.example\r\nContent-Length: 0\r\n\r\n")
    write(t, "pipelined-duplicate", post(b"/tlsrpt/example.com", b"application/tlsrpt+json", MINIMAL) +
          post(b"/tlsrpt/example.com", b"application/tlsrpt+json", MINIMAL))


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\0"


def dns_query(qid: int, name: str, qtype: int, edns: int = 0, flags: int = 0x0100) -> bytes:
    """A query as a resolver sends it: header, one question, an OPT record when `edns`."""
    header = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    question = dns_name(name) + struct.pack(">HH", qtype, 1)
    opt = b"\0" + struct.pack(">HHIH", 41, edns, 0, 0) if edns else b""
    return header + question + opt


def dns_query_seeds():
    t = "dns_query"
    zone = "sts.operator.example"
    TXT, SOA, NS, ANY, AXFR = 16, 6, 2, 255, 252
    write(t, "txt", dns_query(1, f"a.example._mta-sts.{zone}", TXT))
    write(t, "tlsrpt", dns_query(2, f"a.example._smtp._tls.{zone}", TXT))
    write(t, "long-txt-512", dns_query(3, f"long.example._smtp._tls.{zone}", TXT))
    write(t, "long-txt-edns", dns_query(4, f"long.example._smtp._tls.{zone}", TXT, edns=1232))
    write(t, "soa", dns_query(5, zone, SOA, edns=4096))
    write(t, "ns", dns_query(6, zone, NS))
    write(t, "any", dns_query(7, f"a.example._mta-sts.{zone}", ANY))
    write(t, "axfr", dns_query(8, zone, AXFR))
    write(t, "empty-non-terminal", dns_query(9, f"_mta-sts.{zone}", TXT))
    write(t, "nxdomain", dns_query(10, f"nobody.example._mta-sts.{zone}", TXT))
    write(t, "out-of-zone", dns_query(11, "example.com", TXT))
    write(t, "response-bit", dns_query(12, zone, SOA, flags=0x8100))
    write(t, "update-opcode", dns_query(13, zone, SOA, flags=0x2800))


if __name__ == "__main__":
    for f in (tenant_file, server_file, policy_roundtrip, tlsrpt_decode, mail, http_policy, intake_http,
              dns_query_seeds):
        f()
    for d in sorted((FUZZ / "corpus").iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
