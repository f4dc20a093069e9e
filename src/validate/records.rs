//! The TXT records a sender reads, checked as it reads them: `_mta-sts` (RFC 8461 §3.1) and
//! `_smtp._tls` (RFC 8460 §3).

/// The `id` of a syntactically valid `v=STSv1` record, or why it is not valid.
///
/// `sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]`, the
/// version first, an `id` of 1 to 32 letters and digits, other fields `name=value`.
pub fn sts_id(record: &str) -> Result<&str, String> {
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next() != Some("v=STSv1") {
        return Err("does not start with v=STSv1".into());
    }
    let mut id = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not name=value"));
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !name_ok {
            return Err(format!("field name {name:?} is not valid"));
        }
        if name == "id" {
            if id.is_some() {
                return Err("more than one id".into());
            }
            let ok =
                (1..=32).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!("id {value:?} is not 1 to 32 letters and digits"));
            }
            id = Some(value);
        }
    }
    id.ok_or_else(|| "has no id".into())
}

/// The `rua` URIs of a syntactically valid `v=TLSRPTv1` record, or why it is not valid.
/// Each URI is `mailto:` with an address or `https://` with a host.
pub fn tlsrpt_rua(record: &str) -> Result<Vec<&str>, String> {
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next() != Some("v=TLSRPTv1") {
        return Err("does not start with v=TLSRPTv1".into());
    }
    let mut rua = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not name=value"));
        };
        if name != "rua" {
            continue;
        }
        if rua.is_some() {
            return Err("more than one rua".into());
        }
        let uris: Vec<&str> = value.split(',').map(str::trim).collect();
        for uri in &uris {
            valid_rua_uri(uri)?;
        }
        rua = Some(uris);
    }
    rua.ok_or_else(|| "has no rua".into())
}

fn valid_rua_uri(uri: &str) -> Result<(), String> {
    let ok = if let Some(addr) = uri.strip_prefix("mailto:") {
        addr.split_once('@')
            .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'))
    } else if let Some(rest) = uri.strip_prefix("https://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty()
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "rua URI {uri:?} is neither mailto:<address> nor https://<host>/…"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_records_as_senders_read_them() {
        assert_eq!(sts_id("v=STSv1; id=20160831085700Z"), Ok("20160831085700Z"));
        assert_eq!(sts_id("v=STSv1;id=abc;"), Ok("abc"));
        assert_eq!(sts_id("v=STSv1; id=abc; ext=1"), Ok("abc"));
        assert!(sts_id("v=STSv1").is_err());
        assert!(sts_id("v=STSv1; id=").is_err());
        assert!(sts_id("v=STSv1; id=a-b").is_err());
        assert!(sts_id(&format!("v=STSv1; id={}", "a".repeat(33))).is_err());
        assert!(sts_id("id=abc; v=STSv1").is_err());
        assert!(sts_id("v=STSv1; id=a; id=b").is_err());
        assert!(sts_id("v=STSv1; garbage").is_err());
    }

    proptest::proptest! {
        /// Any text from DNS is read without a panic, and what mta-stsd publishes reads back.
        #[test]
        fn any_record_is_read_and_our_own_read_back(
            text in "\\PC{0,200}",
            mx in "[a-z]{1,10}",
        ) {
            let _ = sts_id(&text);
            let _ = tlsrpt_rua(&text);
            let mode = crate::policy::Mode::Testing;
            let policy = crate::policy::Policy::new(mode, vec![format!("{mx}.example")], 86400);
            let txt = policy.txt_value();
            proptest::prop_assert_eq!(sts_id(&txt), Ok(policy.id.as_str()));
            let rua = vec![
                format!("mailto:{mx}@example.com"),
                format!("https://{mx}.example/r"),
            ];
            let value = crate::policy::tlsrpt_txt_value(&rua).unwrap();
            proptest::prop_assert_eq!(tlsrpt_rua(&value).unwrap().len(), 2);
        }
    }

    #[test]
    fn tlsrpt_records_need_a_valid_rua() {
        assert_eq!(
            tlsrpt_rua("v=TLSRPTv1; rua=mailto:r@example.com,https://h.example/tlsrpt/x"),
            Ok(vec!["mailto:r@example.com", "https://h.example/tlsrpt/x"])
        );
        assert!(tlsrpt_rua("v=TLSRPTv1;").is_err());
        assert!(tlsrpt_rua("v=TLSRPTv1; rua=mailto:nobody").is_err());
        assert!(tlsrpt_rua("v=TLSRPTv1; rua=http://h.example/").is_err());
        assert!(tlsrpt_rua("v=TLSRPTv2; rua=mailto:r@example.com").is_err());
    }
}
