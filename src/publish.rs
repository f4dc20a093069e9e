//! What operators publish in DNS: the TXT records a change calls for, and whether a tenant is
//! ready for its `_mta-sts` id to be published.
//!
//! RFC 8461 §8.1: a sender that sees a new id fetches the policy; if the body it gets is still
//! the old one it caches that under the new id. So a new id may be published only once the
//! body it names is served, over a valid certificate. Records are therefore logged after the
//! snapshot swap (the body is live) with the certificate state alongside.

use crate::certs::{CertBoard, CertState, CertStatus};
use crate::config::{ServerConfig, Tenant, TlsRptConfig};
use crate::policy::{Mode, tlsrpt_txt_value, zone_quote};
use crate::registry::{Served, Snapshot};

/// Whether a certificate status means the policy host can be fetched by a sender: valid (or
/// being renewed while the old one is served) and not expired.
pub fn cert_ready(status: Option<&CertStatus>, now: i64) -> bool {
    status.is_some_and(|s| {
        matches!(s.state, CertState::Valid | CertState::Renewing)
            && s.cert.as_ref().is_some_and(|c| c.not_after > now)
    })
}

/// Whether `tenant`'s policy is the one being served and its certificate is valid: only then
/// may its id be published. In cluster mode every live replica must serve it too (the
/// snapshot's [`crate::registry::ClusterGate`]): a sender may fetch from any of them.
pub fn is_ready(snapshot: &Snapshot, board: &CertBoard, tenant: &Tenant, now: i64) -> bool {
    serves(snapshot, board, tenant, now)
        && snapshot
            .cluster
            .as_ref()
            .is_none_or(|gate| gate.confirms(&tenant.host, &tenant.policy.id))
}

/// Whether this process serves `tenant`'s policy over a valid certificate: [`is_ready`]
/// without the other replicas.
pub fn serves(snapshot: &Snapshot, board: &CertBoard, tenant: &Tenant, now: i64) -> bool {
    snapshot
        .get(&tenant.host)
        .is_some_and(|served| served.policy.id == tenant.policy.id)
        && board.with_status(&tenant.host, |status| cert_ready(status, now))
}

/// A DNS record type mta-stsd asks operators to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordType {
    /// A TXT record (`_mta-sts`, `_smtp._tls`).
    #[serde(rename = "TXT")]
    Txt,
    /// The `mta-sts.<domain>` alias to the operator's host.
    #[serde(rename = "CNAME")]
    Cname,
}

/// One DNS record. The only builder is [`tenant_records`]; every consumer (reload log, admin
/// API, `dns` offline and `--admin`, metrics) renders what it returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Owner name, absolute with the trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Record data (unquoted TXT value or CNAME target).
    pub value: String,
}

impl Record {
    fn txt(name: String, value: String) -> Record {
        Record {
            name,
            rtype: RecordType::Txt,
            value,
        }
    }

    /// The zone-file line: `_mta-sts.example.com. IN TXT "v=STSv1; id=…"`.
    pub fn zone_line(&self) -> String {
        match self.rtype {
            RecordType::Txt => format!("{} IN TXT {}", self.name, zone_quote(&self.value)),
            RecordType::Cname => format!("{} IN CNAME {}", self.name, self.value),
        }
    }

    /// The short form operators type into a DNS console and the reload log prints:
    /// `_mta-sts.example.com TXT "v=STSv1; id=…"`.
    pub fn console_line(&self) -> String {
        let name = self.name.trim_end_matches('.');
        match self.rtype {
            RecordType::Txt => format!("{name} TXT {}", zone_quote(&self.value)),
            RecordType::Cname => format!("{name} CNAME {}", self.value),
        }
    }
}

/// What a tenant's records depend on besides the tenant: settings of the server file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Publishing<'a> {
    /// `public_hostname`: the target of the `mta-sts.<domain>` CNAME, when set.
    pub public_hostname: Option<&'a str>,
    /// The TLS-RPT settings: whether the HTTPS report endpoint joins every tenant's rua.
    pub tlsrpt: Option<&'a TlsRptConfig>,
}

impl<'a> Publishing<'a> {
    /// The publishing settings of a server file.
    pub fn of(server: &'a ServerConfig) -> Self {
        Publishing {
            public_hostname: server.public_hostname.as_deref(),
            tlsrpt: Some(&server.tlsrpt),
        }
    }
}

/// The records one tenant needs, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecords {
    /// `_mta-sts.<domain>` TXT `v=STSv1; id=…`.
    pub mta_sts: Record,
    /// `_smtp._tls.<domain>` TXT, when the tenant has report addresses or the server
    /// publishes its HTTPS endpoint.
    pub tlsrpt: Option<Record>,
    /// `mta-sts.<domain>` CNAME, when the server file names its `public_hostname`.
    pub cname: Option<Record>,
}

impl TenantRecords {
    /// Every record, in the order operators are shown them.
    pub fn list(&self) -> Vec<Record> {
        std::iter::once(&self.mta_sts)
            .chain(&self.tlsrpt)
            .chain(&self.cname)
            .cloned()
            .collect()
    }
}

/// The id to publish in `_mta-sts.<domain>`: the digest of the body being served (its
/// readiness is reported beside it, see [`is_ready`]).
pub fn sts_id(tenant: &Tenant) -> &str {
    &tenant.policy.id
}

/// The one builder of a tenant's DNS records. The server's HTTPS report endpoint, when
/// published, joins the tenant's own rua addresses, so a tenant without any still gets a
/// `_smtp._tls` record.
pub fn tenant_records(tenant: &Tenant, publishing: Publishing<'_>) -> TenantRecords {
    let mta_sts = Record::txt(
        format!("_mta-sts.{}.", tenant.domain),
        format!("v=STSv1; id={}", sts_id(tenant)),
    );
    let mut rua = tenant.rua.clone();
    let endpoint = publishing
        .tlsrpt
        .and_then(|t| t.published_endpoint(&tenant.domain));
    if let Some(uri) = endpoint
        && !rua.iter().any(|u| u.eq_ignore_ascii_case(&uri))
    {
        rua.push(uri);
    }
    let tlsrpt = tlsrpt_txt_value(&rua)
        .map(|value| Record::txt(format!("_smtp._tls.{}.", tenant.domain), value));
    let cname = publishing.public_hostname.map(|target| Record {
        name: format!("{}.", tenant.host),
        rtype: RecordType::Cname,
        value: format!("{target}."),
    });
    TenantRecords {
        mta_sts,
        tlsrpt,
        cname,
    }
}

/// The `_mta-sts` record as the operator enters it: `_mta-sts.example.com TXT "v=STSv1; id=…"`.
pub fn sts_record(tenant: &Tenant) -> String {
    tenant_records(tenant, Publishing::default())
        .mta_sts
        .console_line()
}

/// One DNS-relevant change between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new or changed policy id: publish this `_mta-sts` record.
    StsId {
        /// Tenant domain.
        domain: String,
        /// The record line.
        record: String,
        /// The tenant was not served before.
        added: bool,
    },
    /// A new or changed `_smtp._tls` record.
    TlsRpt {
        /// Tenant domain.
        domain: String,
        /// The record line.
        record: String,
    },
    /// The tenant no longer has TLS-RPT addresses configured.
    TlsRptRemoved {
        /// Tenant domain.
        domain: String,
    },
    /// The tenant is no longer served.
    Removed {
        /// Tenant domain.
        domain: String,
        /// Its last mode: anything but `none` means senders still hold a live policy.
        mode: Mode,
    },
}

/// The changes from `old` to `new`, sorted by domain. O(tenants).
pub fn changes(old: &Snapshot, new: &Snapshot, publishing: Publishing<'_>) -> Vec<Change> {
    let mut out = Vec::new();
    for t in new.tenants() {
        change_of(
            old.get(&t.host).map(|b| &**b),
            Some(t),
            publishing,
            &mut out,
        );
    }
    for t in old.tenants().filter(|t| new.get(&t.host).is_none()) {
        change_of(Some(t), None, publishing, &mut out);
    }
    out.sort_by(|a, b| domain_of(a).cmp(domain_of(b)));
    out
}

/// The changes of the served-table changes of one swap, sorted by domain: O(changed tenants).
pub fn served_changes(served: &[Served], publishing: Publishing<'_>) -> Vec<Change> {
    let mut out = Vec::new();
    for s in served {
        change_of(
            s.before.as_deref(),
            s.after.as_deref(),
            publishing,
            &mut out,
        );
    }
    out.sort_by(|a, b| domain_of(a).cmp(domain_of(b)));
    out
}

/// The records one tenant going from `before` to `after` calls for.
fn change_of(
    before: Option<&Tenant>,
    after: Option<&Tenant>,
    publishing: Publishing<'_>,
    out: &mut Vec<Change>,
) {
    let Some(t) = after else {
        if let Some(b) = before {
            out.push(Change::Removed {
                domain: b.domain.clone(),
                mode: b.policy.mode,
            });
        }
        return;
    };
    if before.is_none_or(|b| b.policy.id != t.policy.id) {
        out.push(Change::StsId {
            domain: t.domain.clone(),
            record: sts_record(t),
            added: before.is_none(),
        });
    }
    let old_rpt = before.and_then(|b| tenant_records(b, publishing).tlsrpt);
    let new_rpt = tenant_records(t, publishing).tlsrpt;
    if old_rpt != new_rpt {
        match new_rpt.map(|r| r.console_line()) {
            Some(record) => out.push(Change::TlsRpt {
                domain: t.domain.clone(),
                record,
            }),
            None => out.push(Change::TlsRptRemoved {
                domain: t.domain.clone(),
            }),
        }
    }
}

fn domain_of(c: &Change) -> &str {
    match c {
        Change::StsId { domain, .. }
        | Change::TlsRpt { domain, .. }
        | Change::TlsRptRemoved { domain }
        | Change::Removed { domain, .. } => domain,
    }
}

/// Above this many changes in one reload, the log gets one summary line instead of a line per
/// record (a bulk file of 200 000 tenants must not write 200 000 lines); the records are at
/// debug level, and `mta-stsd dns --admin` or `GET /api/v1/tenants/<d>` has every one.
pub const LOG_EACH_LIMIT: usize = 20;

/// How many domains a summary line names.
const SUMMARY_DOMAINS: usize = 5;

/// Logs each new `_mta-sts` / `_smtp._tls` record and each removal, or one summary line when
/// there are more than [`LOG_EACH_LIMIT`].
pub fn log_changes(old: &Snapshot, new: &Snapshot, board: &CertBoard, publishing: Publishing<'_>) {
    log_change_list(changes(old, new, publishing), new, board);
}

/// [`log_changes`] for the served-table changes of one swap (O(changed tenants)); `new` is the
/// snapshot they produced.
pub fn log_served(
    served: &[Served],
    new: &Snapshot,
    board: &CertBoard,
    publishing: Publishing<'_>,
) {
    log_change_list(served_changes(served, publishing), new, board);
}

fn log_change_list(all: Vec<Change>, new: &Snapshot, board: &CertBoard) {
    let summarize = all.len() > LOG_EACH_LIMIT;
    if summarize {
        let summary = ChangeSummary::of(&all);
        if summary.removed_live > 0 {
            tracing::warn!(changes = all.len(), "{summary}");
        } else {
            tracing::info!(changes = all.len(), "{summary}");
        }
    }
    let now = crate::util::unix_now();
    for change in all {
        if summarize {
            if tracing::enabled!(tracing::Level::DEBUG) {
                log_change_at_debug(change);
            }
        } else {
            log_change(new, board, change, now);
        }
    }
}

fn log_change(new: &Snapshot, board: &CertBoard, change: Change, now: i64) {
    match change {
        Change::StsId {
            domain,
            record,
            added,
        } => {
            let ready = new
                .by_domain(&domain)
                .is_some_and(|t| is_ready(new, board, t, now));
            tracing::info!(%domain, ready, added, "{record}");
        }
        Change::TlsRpt { domain, record } => tracing::info!(%domain, "{record}"),
        Change::TlsRptRemoved { domain } => {
            tracing::info!(%domain, "_smtp._tls.{domain} TXT record is no longer configured; remove it")
        }
        Change::Removed { domain, mode } if mode != Mode::None => tracing::warn!(
            %domain, %mode,
            "tenant removed while its policy was {mode}: senders keep the cached policy until max_age passes; RFC 8461 §8.3 withdraws with mode none and a new id first"
        ),
        Change::Removed { domain, .. } => tracing::info!(
            %domain,
            "tenant removed; its _mta-sts.{domain} TXT record can go once the earlier policies' max_age has passed"
        ),
    }
}

fn log_change_at_debug(change: Change) {
    match change {
        Change::StsId {
            domain,
            record,
            added,
        } => tracing::debug!(%domain, added, "{record}"),
        Change::TlsRpt { domain, record } => tracing::debug!(%domain, "{record}"),
        Change::TlsRptRemoved { domain } => {
            tracing::debug!(%domain, "_smtp._tls.{domain} TXT record is no longer configured")
        }
        Change::Removed { domain, mode } => tracing::debug!(%domain, %mode, "tenant removed"),
    }
}

/// The counts one summary line reports, and the first domains changed.
#[derive(Debug, Default, PartialEq)]
pub struct ChangeSummary {
    /// New `_mta-sts` ids, including those of added tenants.
    pub new_ids: usize,
    /// Tenants that were not served before.
    pub added: usize,
    /// New or changed `_smtp._tls` records.
    pub tlsrpt: usize,
    /// `_smtp._tls` records no longer configured.
    pub tlsrpt_removed: usize,
    /// Tenants no longer served.
    pub removed: usize,
    /// Of those, removed while their mode was not `none` (RFC 8461 §8.3).
    pub removed_live: usize,
    /// The first few domains, in order, without repeats.
    pub first: Vec<String>,
}

impl ChangeSummary {
    /// Counts `changes` (sorted by domain, as [`changes`] returns them).
    pub fn of(changes: &[Change]) -> ChangeSummary {
        let mut s = ChangeSummary::default();
        for change in changes {
            match change {
                Change::StsId { added, .. } => {
                    s.new_ids += 1;
                    s.added += usize::from(*added);
                }
                Change::TlsRpt { .. } => s.tlsrpt += 1,
                Change::TlsRptRemoved { .. } => s.tlsrpt_removed += 1,
                Change::Removed { mode, .. } => {
                    s.removed += 1;
                    s.removed_live += usize::from(*mode != Mode::None);
                }
            }
            let domain = domain_of(change);
            if s.first.len() < SUMMARY_DOMAINS && s.first.last().is_none_or(|d| d != domain) {
                s.first.push(domain.to_string());
            }
        }
        s
    }
}

impl std::fmt::Display for ChangeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DNS records changed: {} new _mta-sts ids ({} new tenants), {} _smtp._tls records changed, {} removed; {} tenants removed",
            self.new_ids, self.added, self.tlsrpt, self.tlsrpt_removed, self.removed
        )?;
        if self.removed_live > 0 {
            write!(
                f,
                " ({} while their mode was not none: senders keep those policies until max_age passes, RFC 8461 §8.3)",
                self.removed_live
            )?;
        }
        write!(
            f,
            "; first: {}; every record: `mta-stsd dns --admin URL` or debug logs",
            self.first.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn snap(yaml: &str) -> Snapshot {
        Snapshot::from_yaml(yaml)
    }

    #[test]
    fn records_and_changes() {
        let old = snap(
            "- {domain: a.example, mode: testing, mx: [mx.a.example], max_age: 86400}\n- {domain: b.example, mode: enforce, mx: [mx.b.example], max_age: 604800}\n",
        );
        let new = snap(
            "- {domain: a.example, mode: enforce, mx: [mx.a.example], max_age: 604800, tlsrpt: {rua: [\"mailto:r@a.example\"]}}\n- {domain: c.example, mode: testing, mx: [mx.c.example], max_age: 86400}\n",
        );
        let a = new.by_domain("a.example").unwrap();
        assert_eq!(
            sts_record(a),
            format!("_mta-sts.a.example TXT \"v=STSv1; id={}\"", a.policy.id)
        );
        let got = changes(&old, &new, Publishing::default());
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            matches!(&got[0], Change::StsId { domain, added: false, .. } if domain == "a.example")
        );
        assert_eq!(
            got[1],
            Change::TlsRpt {
                domain: "a.example".into(),
                record: "_smtp._tls.a.example TXT \"v=TLSRPTv1; rua=mailto:r@a.example\"".into()
            }
        );
        assert_eq!(
            got[2],
            Change::Removed {
                domain: "b.example".into(),
                mode: Mode::Enforce
            }
        );
        assert!(
            matches!(&got[3], Change::StsId { domain, added: true, .. } if domain == "c.example")
        );
        assert!(changes(&new, &new, Publishing::default()).is_empty());
    }

    #[test]
    fn the_log_shows_the_records_the_builder_makes() {
        let old = snap("- {domain: c.example, mode: testing, mx: [mx.c.example]}\n");
        let new = snap(
            "- {domain: a.example, mode: testing, mx: [mx.a.example]}\n- {domain: b.example, mode: testing, mx: [mx.b.example], tlsrpt: {rua: [\"mailto:r@b.example\"]}}\n",
        );
        let mut tlsrpt = TlsRptConfig::defaults(Path::new("/state"));
        tlsrpt.report_host = Some("tlsrpt.operator.example".into());
        tlsrpt.publish_endpoint = true;
        let publishing = Publishing {
            public_hostname: None,
            tlsrpt: Some(&tlsrpt),
        };
        let logged: Vec<(String, String)> = changes(&old, &new, publishing)
            .into_iter()
            .filter_map(|c| match c {
                Change::TlsRpt { domain, record } => Some((domain, record)),
                _ => None,
            })
            .collect();
        // a.example has no rua of its own: with the endpoint published it still needs a
        // record, and the log names the same one the builder gives the API and `dns`.
        let expected: Vec<(String, String)> = ["a.example", "b.example"]
            .iter()
            .map(|d| {
                let t = new.by_domain(d).unwrap();
                let line = tenant_records(t, publishing).tlsrpt.unwrap().console_line();
                assert!(
                    line.contains(&format!("https://tlsrpt.operator.example/tlsrpt/{d}")),
                    "{line}"
                );
                (d.to_string(), line)
            })
            .collect();
        assert_eq!(logged, expected);
        assert_eq!(
            tenant_records(new.by_domain("a.example").unwrap(), Publishing::default()).tlsrpt,
            None
        );
    }

    #[test]
    fn readiness_needs_a_valid_unexpired_certificate() {
        let s = snap("domain: a.example\nmode: testing\nmx: [mx.a.example]\n");
        let t = s.by_domain("a.example").unwrap().clone();
        let board = CertBoard::new();
        assert!(!is_ready(&s, &board, &t, 1000));
        let mut status = CertStatus::new(CertState::Valid, "internal");
        status.cert = Some(crate::certs::CertInfo {
            issuer: "ca".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: 2000,
        });
        board.set(&t.host, status.clone());
        assert!(is_ready(&s, &board, &t, 1000));
        assert!(!is_ready(&s, &board, &t, 2000), "expired");
        status.state = CertState::Pending;
        board.set(&t.host, status);
        assert!(!is_ready(&s, &board, &t, 1000));
        let other = snap("domain: a.example\nmode: enforce\nmx: [mx.a.example]\n");
        let newer = other.by_domain("a.example").unwrap();
        assert!(!is_ready(&s, &board, newer, 1000), "body not served yet");
    }

    #[test]
    fn a_summary_counts_every_kind_and_names_the_first_domains() {
        let old = snap(
            "- {domain: gone.example, mode: enforce, mx: [mx.g.example]}\n- {domain: off.example, mode: none, mx: [mx.o.example]}\n- {domain: b.example, mode: testing, mx: [mx.b.example], tlsrpt: {rua: [\"mailto:r@b.example\"]}}\n",
        );
        let new = snap(
            "- {domain: a.example, mode: testing, mx: [mx.a.example], tlsrpt: {rua: [\"mailto:r@a.example\"]}}\n- {domain: b.example, mode: enforce, mx: [mx.b.example]}\n",
        );
        let all = changes(&old, &new, Publishing::default());
        let summary = ChangeSummary::of(&all);
        assert_eq!(
            summary,
            ChangeSummary {
                new_ids: 2,
                added: 1,
                tlsrpt: 1,
                tlsrpt_removed: 1,
                removed: 2,
                removed_live: 1,
                first: ["a.example", "b.example", "gone.example", "off.example"]
                    .map(String::from)
                    .to_vec(),
            }
        );
        assert_eq!(
            summary.to_string(),
            "DNS records changed: 2 new _mta-sts ids (1 new tenants), 1 _smtp._tls records changed, 1 removed; 2 tenants removed (1 while their mode was not none: senders keep those policies until max_age passes, RFC 8461 §8.3); first: a.example, b.example, gone.example, off.example; every record: `mta-stsd dns --admin URL` or debug logs"
        );
        let many: String = (0..9)
            .map(|i| format!("- {{domain: d{i}.example, mode: testing, mx: [mx.example]}}\n"))
            .collect();
        let s = ChangeSummary::of(&changes(&old, &snap(&many), Publishing::default()));
        assert_eq!(s.first.len(), SUMMARY_DOMAINS);
        assert_eq!(s.first[0], "b.example");
    }
}
