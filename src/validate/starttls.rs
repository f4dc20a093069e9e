//! Check 6, `mx-starttls`: each MX host resolved through the checks' resolver and probed on
//! `smtp_port` as a sender enforcing the policy would ([`crate::probe`]). The outcome of a host
//! is kept for one interval, so the many tenants sharing an MX cause one probe, and the
//! [`Prober`] keeps the connections few.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Check, Settings, Status, Validator, Verdict, lookup};
use crate::probe::{ProbeOptions, ProbeOutcome, Prober, Step, TrustRoots};

/// Probes at once, over every tenant: a validation must not look like a mail storm.
const CONNECTIONS: usize = 4;
/// The map of latest outcomes is pruned of expired entries once it holds this many.
const PRUNE_AT: usize = 1024;

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, ProbeOutcome)>>>;

/// The prober and the latest outcome per MX host.
pub(super) struct Probes {
    prober: Prober,
    port: u16,
    interval: Duration,
    latest: Mutex<HashMap<String, Slot>>,
}

impl Probes {
    /// `None` when `settings.starttls` is off.
    pub(super) fn new(settings: &Settings) -> anyhow::Result<Option<Probes>> {
        if !settings.starttls {
            return Ok(None);
        }
        let roots = match &settings.ca_file {
            Some(file) => TrustRoots::Only(super::fetch::read_roots(file)?),
            None => TrustRoots::System,
        };
        let mut opts = ProbeOptions::new(&settings.ehlo_name, roots)?;
        opts.connect_timeout = settings.timeout;
        opts.step_timeout = settings.timeout;
        opts.total_timeout = settings.timeout * 3;
        let interval = settings.probe_interval;
        Ok(Some(Probes {
            prober: Prober::new(Arc::new(opts), CONNECTIONS, interval),
            port: settings.smtp_port,
            interval,
            latest: Mutex::new(HashMap::new()),
        }))
    }

    fn slot(&self, host: &str) -> Slot {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let mut map = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            let interval = self.interval;
            map.retain(|_, slot| match slot.try_lock() {
                Ok(held) => held.as_ref().is_some_and(|(at, _)| at.elapsed() < interval),
                Err(_) => true,
            });
        }
        map.entry(key).or_default().clone()
    }

    /// The outcome of `host`: the one kept when younger than the interval, else a new probe.
    async fn outcome(&self, v: &Validator, host: &str) -> ProbeOutcome {
        let slot = self.slot(host);
        let mut held = slot.lock().await;
        if let Some((at, outcome)) = held.as_ref()
            && at.elapsed() < self.interval
        {
            return outcome.clone();
        }
        let outcome = match lookup::addresses(&v.resolver, host).await {
            Ok(ips) if ips.is_empty() => no_address(format!("{host} has no A or AAAA record")),
            Err(e) => no_address(e),
            Ok(ips) => {
                let addrs: Vec<SocketAddr> =
                    ips.into_iter().map(|ip| (ip, self.port).into()).collect();
                match self.prober.probe(host, &addrs).await {
                    Ok(outcome) => outcome,
                    // Probed by another round less than an interval ago: its outcome stands.
                    Err(_) => match held.as_ref() {
                        Some((_, outcome)) => outcome.clone(),
                        None => no_address(format!("{host}: probed too recently")),
                    },
                }
            }
        };
        *held = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

fn no_address(detail: String) -> ProbeOutcome {
    ProbeOutcome::Unreachable {
        step: Step::Connect,
        detail,
    }
}

/// The system's host name (`/proc/sys/kernel/hostname`, else `/etc/hostname`), `localhost`
/// when neither says.
pub(super) fn system_host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Validator {
    /// Check 6: every MX host in `hosts` (from check 5) probed with STARTTLS.
    pub(super) async fn mx_starttls(&self, hosts: &[String]) -> Verdict {
        let c = Check::MxStarttls;
        let probes = match &self.probes {
            Ok(probes) => probes,
            Err(e) => {
                return Verdict::warning(
                    c,
                    format!("not probed: {e}"),
                    "give the probe trusted roots (validation.ca_file, or the system's CA bundle)",
                );
            }
        };
        let Some(probes) = probes else {
            return Verdict::ok(
                c,
                "not probed: the STARTTLS probe is off (validation.starttls: false, or --no-starttls)"
                    .into(),
            );
        };
        if hosts.is_empty() {
            return Verdict::warning(
                c,
                "not probed: no MX host".into(),
                "publish the MX records (see mx)",
            );
        }
        let outcomes = futures_util::future::join_all(
            hosts
                .iter()
                .map(|h| async move { (h.clone(), probes.outcome(self, h).await) }),
        )
        .await;
        starttls_verdict(&outcomes, probes.port)
    }
}

/// The verdict from each MX host's outcome: an error when a sender would fail (naming the
/// result-type it reports), a warning when a host gave no verdict, else ok.
fn starttls_verdict(outcomes: &[(String, ProbeOutcome)], port: u16) -> Verdict {
    let c = Check::MxStarttls;
    let observed = outcomes
        .iter()
        .map(|(host, outcome)| format!("{host}: {outcome}"))
        .collect::<Vec<_>>()
        .join("; ");
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(h, o)| o.result_type().map(|t| format!("{t} for {h}")))
        .collect();
    if !failed.is_empty() {
        let action = format!(
            "senders enforcing the policy would report {} and not deliver there: fix the MX's STARTTLS certificate (or leave the tenant in testing)",
            failed.join(", ")
        );
        return Verdict::bad(c, Status::Error, observed, action);
    }
    let silent: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, ProbeOutcome::Unreachable { .. }))
        .map(|(h, _)| h.as_str())
        .collect();
    if !silent.is_empty() {
        let action = format!(
            "no TLS verdict for {} on port {port}: this host may be firewalled from it (that proves nothing), else check that the MX is up",
            silent.join(", ")
        );
        return Verdict::warning(c, observed, action);
    }
    Verdict::ok(c, observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ResultType, TlsSession};

    fn ok() -> ProbeOutcome {
        ProbeOutcome::Ok(TlsSession {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            not_after: 0,
        })
    }

    #[test]
    fn a_failure_is_an_error_naming_the_result_type_and_silence_a_warning() {
        let expired = ProbeOutcome::Failed {
            result_type: ResultType::CertificateExpired,
            detail: "expired".into(),
        };
        let closed = no_address("refused".into());
        let all_ok = [("mx1.example".to_string(), ok())];
        assert_eq!(starttls_verdict(&all_ok, 25).status, Status::Ok);
        let v = starttls_verdict(
            &[
                ("mx1.example".into(), ok()),
                ("mx2.example".into(), expired),
                ("mx3.example".into(), closed.clone()),
            ],
            25,
        );
        assert_eq!(v.status, Status::Error);
        let action = v.action.unwrap();
        assert!(
            action.contains("certificate-expired for mx2.example"),
            "{action}"
        );
        assert!(v.observed.contains("mx3.example: no verdict (connect)"));
        let v = starttls_verdict(&[("mx3.example".into(), closed)], 2525);
        assert_eq!(v.status, Status::Warning);
        assert!(v.action.unwrap().contains("port 2525"));
    }
}
