//! TLS for the PostgreSQL sink, with libpq's `sslmode` values (PostgreSQL docs, "SSL
//! Support", table "SSL Mode Descriptions"). tokio-postgres parses only `disable`,
//! `prefer` and `require` and leaves verifying to the connector: here native-tls
//! (OpenSSL on Linux, already linked for librdkafka) does it.
//!
//! | `sslmode` | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (libpq's default), `require` | yes (`prefer`: if the server offers it) | only with `sslrootcert` (libpq: then as `verify-ca`) | no |
//! | `verify-ca` | yes | yes, against `sslrootcert` (else the system's CAs) | no |
//! | `verify-full` | yes | yes | yes |

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;

use crate::error::Error;

/// `url` without the parameters tokio-postgres refuses (`sslmode=verify-ca|verify-full`
/// become `require`; `sslrootcert` is taken out), and the TLS connector they ask for.
///
/// # Errors
/// [`Error::Config`] when `sslrootcert` cannot be read or is not PEM;
/// [`Error::Database`] when the TLS connector cannot be built.
pub(crate) fn connector(url: &str) -> Result<(String, MakeTlsConnector), Error> {
    let (url, mode, root) = take_tls_params(url);
    let mut builder = TlsConnector::builder();
    if let Some(path) = &root {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("sink.url: sslrootcert {path}: {e}")))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            Error::Config(format!(
                "sink.url: sslrootcert {path}: not a PEM certificate: {e}"
            ))
        })?;
        builder.add_root_certificate(cert);
    }
    match mode.as_deref() {
        Some("verify-full") => {}
        Some("verify-ca") => {
            builder.danger_accept_invalid_hostnames(true);
        }
        // require / prefer: libpq checks the chain only when a root certificate is given.
        _ if root.is_some() => {
            builder.danger_accept_invalid_hostnames(true);
        }
        _ => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
    }
    let tls = builder.build().map_err(|e| Error::Database {
        context: "building the TLS connector".into(),
        source: Box::new(e),
    })?;
    Ok((url, MakeTlsConnector::new(tls)))
}

/// Splits `sslmode=verify-…` and `sslrootcert=…` out of a libpq URL
/// (`postgresql://…?a=b&c=d`) or key=value string; returns the rest (with
/// `sslmode=require` in place of a verify mode), the mode, and the root certificate.
fn take_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut keep = |param: &str| -> Option<String> {
        match param.split_once('=') {
            Some(("sslrootcert", v)) => {
                root = Some(v.to_string());
                None
            }
            Some(("sslmode", v)) => {
                mode = Some(v.to_string());
                Some(if v.starts_with("verify") {
                    "sslmode=require".into()
                } else {
                    param.to_string()
                })
            }
            _ => Some(param.to_string()),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let params: Vec<String> = query.split('&').filter_map(&mut keep).collect();
                if params.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", params.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace()
            .filter_map(&mut keep)
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_and_the_root_certificate_leave_the_url() {
        assert_eq!(
            take_tls_params(
                "postgresql://u@h:5/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x"
            ),
            (
                "postgresql://u@h:5/db?sslmode=require&application_name=x".to_string(),
                Some("verify-full".to_string()),
                Some("/ca.pem".to_string())
            )
        );
        assert_eq!(
            take_tls_params("host=h sslmode=verify-ca sslrootcert=/ca.pem dbname=d"),
            (
                "host=h sslmode=require dbname=d".to_string(),
                Some("verify-ca".to_string()),
                Some("/ca.pem".to_string())
            )
        );
        assert_eq!(
            take_tls_params("postgresql://u@h/db"),
            ("postgresql://u@h/db".to_string(), None, None)
        );
        assert_eq!(
            take_tls_params("postgresql://u@h/db?sslrootcert=/ca.pem"),
            (
                "postgresql://u@h/db".to_string(),
                None,
                Some("/ca.pem".to_string())
            )
        );
    }
}
