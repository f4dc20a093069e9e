//! The delegated zone's records and its `ZoneHandler` for hickory's `Catalog`.
//!
//! hickory's `InMemoryZoneHandler` answers a miss by scanning every record of the zone (to
//! tell NODATA from NXDOMAIN), which at 100 000 tenants is 200 000 comparisons per query
//! anyone can send. This store keeps the same answers behind hash maps: the TXT sets by
//! owner name and every existing name (owners and their empty non-terminals) in a set, so
//! each query is O(1). Message building, EDNS, truncation and the SOA in the authority
//! section of negative answers stay hickory's (`Catalog`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneTransfer, ZoneType,
};

use super::gate::Update;
use super::names::target_name;
use crate::certs::acme::dns01::{Answers, CHALLENGE_LABEL};
use crate::config::DnsConfig;

/// SOA timers: secondaries (if any) check hourly; expire after two weeks without the primary.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 1_209_600;
/// Negative-caching TTL (RFC 2308): short, so a new tenant's name is found within a minute.
const SOA_MINIMUM: u32 = 60;
/// TTL of the apex SOA and NS sets: they change only with the configuration.
const APEX_TTL: u32 = 3600;
/// TTL of a DNS-01 answer: each order has a new value, and a CA retrying must not see an old
/// one from a resolver's cache.
const CHALLENGE_TTL: u32 = 10;

/// The records the zone answers.
struct Records {
    serial: u32,
    soa: Arc<RecordSet>,
    ns: Arc<RecordSet>,
    txt: HashMap<LowerName, Arc<RecordSet>>,
    /// Every name that exists: the apex, owners and each ancestor between them (RFC 8020:
    /// an empty non-terminal is NODATA, never NXDOMAIN).
    names: HashSet<LowerName>,
}

/// The zone: read by every query, written by the refresh task.
pub struct Zone {
    origin: LowerName,
    apex: Name,
    config: DnsConfig,
    records: RwLock<Records>,
    /// `_acme-challenge.<zone>` and the DNS-01 answers below it, when the issuer uses DNS-01.
    challenges: Option<(LowerName, Arc<Answers>)>,
}

/// A host name from the validated configuration as an absolute wire name.
fn fqdn(text: &str) -> anyhow::Result<Name> {
    let mut name = Name::from_ascii(text).map_err(|e| anyhow::anyhow!("{text}: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

impl Zone {
    /// An empty zone (SOA and NS only) with serial `serial`.
    pub fn new(config: &DnsConfig, serial: u32) -> anyhow::Result<Zone> {
        let apex = fqdn(&config.zone)?;
        let mut ns = RecordSet::with_ttl(apex.clone(), RecordType::NS, APEX_TTL);
        for host in &config.nameservers {
            ns.add_rdata(RData::NS(NS(fqdn(host)?)));
        }
        let mut names = HashSet::new();
        names.insert(LowerName::new(&apex));
        let zone = Zone {
            origin: LowerName::new(&apex),
            records: RwLock::new(Records {
                serial,
                soa: Arc::new(RecordSet::new(apex.clone(), RecordType::SOA, serial)),
                ns: Arc::new(ns),
                txt: HashMap::new(),
                names,
            }),
            apex,
            config: config.clone(),
            challenges: None,
        };
        let soa = zone.soa_set(serial)?;
        zone.write().soa = Arc::new(soa);
        Ok(zone)
    }

    /// Answers DNS-01 challenges from `answers` below `_acme-challenge.<zone>`.
    pub fn with_challenges(mut self, answers: Arc<Answers>) -> anyhow::Result<Zone> {
        let apex = fqdn(&format!("{CHALLENGE_LABEL}.{}", self.config.zone))?;
        self.challenges = Some((LowerName::new(&apex), answers));
        Ok(self)
    }

    /// The DNS-01 answer at `name`, when `name` is in the challenge subtree (`None` outside
    /// it): TXT values of the orders in flight, NODATA at `_acme-challenge.<zone>` itself (an
    /// empty non-terminal), NXDOMAIN for a host with no challenge open.
    fn challenge(
        &self,
        name: &LowerName,
        rtype: RecordType,
    ) -> Option<Result<Arc<RecordSet>, LookupError>> {
        let (apex, answers) = self.challenges.as_ref()?;
        if !apex.zone_of(name) {
            return None;
        }
        if name == apex {
            return Some(Err(LookupError::NameExists));
        }
        let key = name.to_string();
        let values = answers.get(key.trim_end_matches('.'));
        if values.is_empty() {
            return Some(Err(LookupError::from(ResponseCode::NXDomain)));
        }
        if !matches!(rtype, RecordType::TXT | RecordType::ANY) {
            return Some(Err(LookupError::NameExists));
        }
        let owner = Name::from(name);
        let mut set = RecordSet::with_ttl(owner.clone(), RecordType::TXT, CHALLENGE_TTL);
        for value in values {
            let txt = RData::TXT(TXT::new(vec![value]));
            set.insert(Record::from_rdata(owner.clone(), CHALLENGE_TTL, txt), 0);
        }
        Some(Ok(Arc::new(set)))
    }

    fn soa_set(&self, serial: u32) -> anyhow::Result<RecordSet> {
        let primary = self.config.nameservers.first().map_or("", String::as_str);
        let soa = SOA::new(
            fqdn(primary)?,
            fqdn(&self.config.hostmaster)?,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            SOA_MINIMUM,
        );
        let mut set = RecordSet::with_ttl(self.apex.clone(), RecordType::SOA, APEX_TTL);
        set.add_rdata(RData::SOA(soa));
        Ok(set)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current SOA serial.
    pub fn serial(&self) -> u32 {
        self.read().serial
    }

    /// How many TXT sets the zone answers.
    pub fn txt_records(&self) -> usize {
        self.read().txt.len()
    }

    /// Applies `updates`; the serial moves past both its old value and `now` (so it also
    /// increases across restarts) when anything changed. A name too long for DNS is logged
    /// and left out; it does not stop the others.
    pub fn apply(&self, updates: &[Update], now: u32) {
        if updates.is_empty() {
            return;
        }
        let mut built = Vec::with_capacity(updates.len());
        for u in updates {
            match target_name(u.kind, &u.domain, &self.config.zone) {
                Ok(name) => built.push((name, u.value.as_deref().map(|v| self.txt_set(u, v)))),
                Err(why) => {
                    tracing::warn!(domain = %u.domain, "dns: no record for this tenant: {why}")
                }
            }
        }
        let mut records = self.write();
        for (name, set) in built {
            let owner = LowerName::new(&name);
            match set {
                Some(set) => {
                    add_with_ancestors(&mut records.names, &owner, &self.origin);
                    records.txt.insert(owner, Arc::new(set));
                }
                None => {
                    // The name itself may stay as an empty non-terminal of nothing: harmless,
                    // it answers NODATA like any name that once existed.
                    records.txt.remove(&owner);
                }
            }
        }
        let serial = records.serial.wrapping_add(1).max(now);
        match self.soa_set(serial) {
            Ok(soa) => {
                records.serial = serial;
                records.soa = Arc::new(soa);
            }
            Err(err) => tracing::error!(error = %err, "dns: cannot build the SOA"),
        }
    }

    /// One TXT set; a value over 255 bytes is split into character-strings (RFC 7208 §3.3
    /// style), which receivers concatenate.
    fn txt_set(&self, u: &Update, value: &str) -> RecordSet {
        let name = target_name(u.kind, &u.domain, &self.config.zone).unwrap_or_default();
        let strings = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let ttl = self.config.ttl;
        let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, ttl);
        set.insert(
            Record::from_rdata(name, ttl, RData::TXT(TXT::new(strings))),
            0,
        );
        set
    }

    /// The answer for `name` and `rtype`: RFC 8482 for ANY (one set: SOA at the apex, the TXT
    /// below), NODATA for a name that exists without that type, NXDOMAIN otherwise.
    fn answer(&self, name: &LowerName, rtype: RecordType) -> Result<Arc<RecordSet>, LookupError> {
        if !self.origin.zone_of(name) {
            return Err(LookupError::from(ResponseCode::Refused));
        }
        if let Some(answer) = self.challenge(name, rtype) {
            return answer;
        }
        let records = self.read();
        if *name == self.origin {
            return match rtype {
                RecordType::SOA | RecordType::ANY => Ok(records.soa.clone()),
                RecordType::NS => Ok(records.ns.clone()),
                _ => Err(LookupError::NameExists),
            };
        }
        if let Some(txt) = records.txt.get(name) {
            return match rtype {
                RecordType::TXT | RecordType::ANY => Ok(txt.clone()),
                _ => Err(LookupError::NameExists),
            };
        }
        if records.names.contains(name) {
            Err(LookupError::NameExists)
        } else {
            Err(LookupError::from(ResponseCode::NXDomain))
        }
    }

    /// The zone's origin.
    pub fn origin_name(&self) -> &LowerName {
        &self.origin
    }
}

/// Adds `owner` and every name between it and `origin` (exclusive) to `names`.
fn add_with_ancestors(names: &mut HashSet<LowerName>, owner: &LowerName, origin: &LowerName) {
    let mut name = owner.clone();
    while name != *origin && !name.is_root() {
        if !names.insert(name.clone()) {
            // Its ancestors were added with it.
            return;
        }
        name = name.base_name();
    }
}

#[async_trait::async_trait]
impl ZoneHandler for Zone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Break(
            self.answer(name, rtype)
                .map(|set| AuthLookup::answers(LookupRecords::new(lookup_options, set), None)),
        )
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_server::proto::rr::TSigResponseContext>,
    ) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let query = info.query;
        let flow = self
            .lookup(
                query.name(),
                query.query_type(),
                Some(&info),
                lookup_options,
            )
            .await;
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // Unsigned zone: there are no NSEC records.
        LookupControlFlow::Break(Ok(AuthLookup::default()))
    }

    async fn zone_transfer(
        &self,
        _request: &Request,
        _lookup_options: LookupOptions,
        _now: u64,
    ) -> Option<(
        Result<ZoneTransfer, LookupError>,
        Option<hickory_server::proto::rr::TSigResponseContext>,
    )> {
        // No secondaries are configured: the zone is never transferred (it would list every
        // customer).
        Some((Err(LookupError::from(ResponseCode::Refused)), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::Kind;

    fn zone() -> Zone {
        let config = DnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "z.example".into(),
            nameservers: vec!["ns1.example".into()],
            hostmaster: "h.example".into(),
            ttl: 300,
            rate_per_second: 0,
            rate_burst: 1,
        };
        Zone::new(&config, 100).unwrap()
    }

    fn lower(name: &str) -> LowerName {
        LowerName::from(Name::from_ascii(name).unwrap())
    }

    fn code(zone: &Zone, name: &str, rtype: RecordType) -> &'static str {
        match zone.answer(&lower(name), rtype) {
            Ok(_) => "answer",
            Err(LookupError::NameExists) => "nodata",
            Err(e) if e.is_nx_domain() => "nxdomain",
            Err(LookupError::ResponseCode(ResponseCode::Refused)) => "refused",
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn answers_nodata_for_empty_non_terminals_and_nxdomain_below_nothing() {
        let z = zone();
        let update = |value: Option<&str>| Update {
            kind: Kind::Sts,
            domain: "mail.a.example".into(),
            value: value.map(str::to_owned),
        };
        z.apply(&[update(Some("v=STSv1; id=1"))], 50);
        assert_eq!(
            z.serial(),
            101,
            "moves past the old serial even when the clock is behind"
        );
        let owner = "mail.a.example._mta-sts.z.example.";
        assert_eq!(code(&z, owner, RecordType::TXT), "answer");
        assert_eq!(code(&z, owner, RecordType::ANY), "answer");
        assert_eq!(code(&z, owner, RecordType::A), "nodata");
        for ent in [
            "a.example._mta-sts.z.example.",
            "example._mta-sts.z.example.",
            "_mta-sts.z.example.",
        ] {
            assert_eq!(code(&z, ent, RecordType::TXT), "nodata", "{ent}");
        }
        assert_eq!(code(&z, "z.example.", RecordType::SOA), "answer");
        assert_eq!(code(&z, "z.example.", RecordType::NS), "answer");
        assert_eq!(code(&z, "z.example.", RecordType::TXT), "nodata");
        assert_eq!(
            code(&z, "b.example._mta-sts.z.example.", RecordType::TXT),
            "nxdomain"
        );
        assert_eq!(
            code(&z, "x.mail.a.example._mta-sts.z.example.", RecordType::TXT),
            "nxdomain"
        );
        assert_eq!(code(&z, "example.", RecordType::TXT), "refused");
        z.apply(&[update(None)], 1000);
        assert_eq!(z.serial(), 1000, "the clock when it is ahead");
        assert_eq!(code(&z, owner, RecordType::TXT), "nodata");
    }

    #[test]
    fn a_txt_value_over_255_bytes_is_split_into_character_strings() {
        let z = zone();
        let value = "v=TLSRPTv1; rua=".to_owned() + &"mailto:x@example.com,".repeat(20);
        z.apply(
            &[Update {
                kind: Kind::TlsRpt,
                domain: "a.example".into(),
                value: Some(value.clone()),
            }],
            200,
        );
        let set = z
            .answer(&lower("a.example._smtp._tls.z.example."), RecordType::TXT)
            .unwrap();
        let RData::TXT(txt) = &set.records_without_rrsigs().next().unwrap().data else {
            panic!()
        };
        assert!(txt.txt_data.len() > 1 && txt.txt_data.iter().all(|s| s.len() <= 255));
        assert_eq!(txt.txt_data.concat(), value.as_bytes());
    }

    #[test]
    fn dns01_answers_appear_only_while_a_challenge_is_open() {
        let answers = Arc::new(Answers::default());
        let z = zone().with_challenges(answers.clone()).unwrap();
        let name = "mta-sts.a.example._acme-challenge.z.example.";
        assert_eq!(
            code(&z, "_acme-challenge.z.example.", RecordType::TXT),
            "nodata"
        );
        assert_eq!(code(&z, name, RecordType::TXT), "nxdomain");
        let target = crate::certs::acme::dns01::target("mta-sts.a.example", "z.example");
        answers.insert(&target, "token-value");
        let set = z.answer(
            &lower("MTA-STS.a.example._acme-challenge.z.example."),
            RecordType::TXT,
        );
        let txt: Vec<String> = set
            .unwrap()
            .records_without_rrsigs()
            .map(|r| r.data.to_string())
            .collect();
        assert_eq!(txt, ["token-value"]);
        assert_eq!(code(&z, name, RecordType::A), "nodata");
        answers.remove(&target, "token-value");
        assert_eq!(code(&z, name, RecordType::TXT), "nxdomain");
        assert_eq!(
            code(&zone(), "_acme-challenge.z.example.", RecordType::TXT),
            "nxdomain",
            "no challenge subtree without DNS-01"
        );
    }
}
