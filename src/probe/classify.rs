//! A failed handshake → the RFC 8460 §4.3 result-type a sending MTA would report.

use rustls::{CertificateError, Error};

use crate::tlsrpt::report::ResultType;

/// The result-type for an error of rustls's handshake (RFC 8460 §4.3.2):
/// - `certificate-host-mismatch`: no name of the certificate matches the MX host;
/// - `certificate-expired`: the certificate (or one of its chain) is past its not-after;
/// - `certificate-not-trusted`: no chain to a trusted root, a bad signature in the chain, a
///   certificate not meant for TLS servers or with an unknown critical extension ("untrusted /
///   unknown CAs, name constraints, chain errors" in the RFC's words);
/// - `validation-failure`: everything else (not yet valid, revoked, unsupported algorithms,
///   no shared cipher or version, alerts, a garbled handshake).
pub fn result_type(error: &Error) -> ResultType {
    match error {
        Error::InvalidCertificate(cert) => certificate(cert),
        _ => ResultType::ValidationFailure,
    }
}

fn certificate(error: &CertificateError) -> ResultType {
    use CertificateError as C;
    match error {
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            ResultType::CertificateHostMismatch
        }
        C::Expired | C::ExpiredContext { .. } => ResultType::CertificateExpired,
        C::UnknownIssuer
        | C::BadSignature
        | C::InvalidPurpose
        | C::InvalidPurposeContext { .. }
        | C::UnhandledCriticalExtension => ResultType::CertificateNotTrusted,
        // Not yet valid, revoked, revocation unknown, unsupported algorithms, bad encoding,
        // an application's own check: none of the named categories.
        _ => ResultType::ValidationFailure,
    }
}

/// The rustls error inside an I/O error of `tokio-rustls`, if there is one.
pub fn rustls_error(error: &std::io::Error) -> Option<&Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{ServerName, UnixTime};

    #[test]
    fn certificate_errors_map_to_their_result_types() {
        let mismatch = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("mx.example").unwrap(),
            presented: vec!["DnsName(\"other.example\")".into()],
        };
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(200)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(100)),
        };
        let cases = [
            (mismatch, ResultType::CertificateHostMismatch),
            (
                CertificateError::NotValidForName,
                ResultType::CertificateHostMismatch,
            ),
            (expired, ResultType::CertificateExpired),
            (CertificateError::Expired, ResultType::CertificateExpired),
            (
                CertificateError::UnknownIssuer,
                ResultType::CertificateNotTrusted,
            ),
            (
                CertificateError::BadSignature,
                ResultType::CertificateNotTrusted,
            ),
            (CertificateError::NotValidYet, ResultType::ValidationFailure),
            (CertificateError::Revoked, ResultType::ValidationFailure),
        ];
        for (error, want) in cases {
            let got = result_type(&Error::InvalidCertificate(error.clone()));
            assert_eq!(got, want, "{error:?}");
        }
    }

    #[test]
    fn other_handshake_errors_are_validation_failures() {
        let alert = Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(result_type(&alert), ResultType::ValidationFailure);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        assert!(matches!(rustls_error(&io), Some(Error::AlertReceived(_))));
        assert!(rustls_error(&std::io::Error::other("reset")).is_none());
    }
}
