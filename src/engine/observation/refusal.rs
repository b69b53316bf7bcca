//! Refused clients fail fast and say why (docs/SECURITY.md). librdkafka retries a
//! wrong password (`ERR__AUTHENTICATION`) and an untrusted certificate (`ERR__SSL`)
//! forever and reports a missing ACL as an error event that changes nothing, so a
//! member left alone would wait forever looking healthy. The engine collects the
//! refusals its consumer reports (error callback, consumer errors) here:
//!
//! * an **authorization** failure (topic, group, cluster, transactional id) stops the
//!   run at the next turn: no ACL appears by waiting;
//! * an **authentication** or **TLS** failure stops it once refusals have gone on for
//!   `LifecycleConfig::refusal_timeout` with no progress in between (a record, an
//!   assignment): a broker that restarts mid-handshake is waited out, a wrong
//!   password is not.
//!
//! Transport errors (a broker down, a network cut) are not refusals and are waited
//! out as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{Error, Refusal};

/// The refusals seen since the last progress.
pub(crate) struct Refusals {
    /// Set while `first` holds a refusal: progress and the turn's check cost one
    /// atomic load when nothing was refused.
    any: AtomicBool,
    first: Mutex<Option<(Instant, Refusal)>>,
    /// How long authentication and TLS refusals may go on.
    bound: Duration,
    /// What the consumer reads, for naming the resource of an authorization failure.
    topics: Vec<String>,
    group: Option<String>,
}

impl Refusals {
    pub(crate) fn new(bound: Duration, topics: Vec<String>, group: Option<String>) -> Self {
        Refusals {
            any: AtomicBool::new(false),
            first: Mutex::new(None),
            bound,
            topics,
            group,
        }
    }

    /// Records `error` (with librdkafka's `reason`, if any) when it is a refusal.
    pub(crate) fn saw(&self, error: &KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        let detail = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        let Some(refusal) = classify(code, detail, &self.topics, self.group.as_deref()) else {
            return;
        };
        let mut first = self.first.lock();
        let now = Instant::now();
        match first.as_mut() {
            // An authorization failure outranks an earlier transient-looking one.
            Some((_, earlier)) if !earlier.is_authorization() && refusal.is_authorization() => {
                *earlier = refusal
            }
            Some(_) => {}
            None => {
                tracing::warn!(%refusal, "the cluster refused this client");
                *first = Some((now, refusal));
                self.any.store(true, Ordering::Release);
            }
        }
    }

    /// Something worked (a record arrived, an assignment): authentication and TLS
    /// refusals seen so far were transient.
    pub(crate) fn progress(&self) {
        if self.any.load(Ordering::Acquire) {
            let mut first = self.first.lock();
            if first.as_ref().is_some_and(|(_, r)| !r.is_authorization()) {
                *first = None;
                self.any.store(false, Ordering::Release);
            }
        }
    }

    /// The error that stops the run now, if any: an authorization failure at once,
    /// another refusal once it has lasted the bound.
    pub(crate) fn due(&self, now: Instant) -> Option<Error> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let first = self.first.lock();
        let (since, refusal) = first.as_ref()?;
        (refusal.is_authorization() || now.duration_since(*since) >= self.bound)
            .then(|| Error::Refused(refusal.clone()))
    }

    /// Any refusal seen, whatever its age (start-up's metadata request timed out:
    /// a refusal explains it better than "unreachable").
    pub(crate) fn seen(&self) -> Option<Refusal> {
        self.first.lock().as_ref().map(|(_, r)| r.clone())
    }
}

/// The refusal an error code means, naming the consumer's resource.
pub(crate) fn classify(
    code: RDKafkaErrorCode,
    detail: String,
    topics: &[String],
    group: Option<&str>,
) -> Option<Refusal> {
    use RDKafkaErrorCode as C;
    Some(match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState => Refusal::Authentication { detail },
        C::SSL => Refusal::Tls { detail },
        C::TopicAuthorizationFailed => Refusal::Authorization {
            resource: format!("topic {}", topics.join(", ")),
            operation: "READ",
            detail,
        },
        C::GroupAuthorizationFailed => Refusal::Authorization {
            resource: format!("group {}", group.unwrap_or("?")),
            operation: "READ",
            detail,
        },
        C::ClusterAuthorizationFailed => Refusal::Authorization {
            resource: "cluster".into(),
            operation: "the request's",
            detail,
        },
        C::TransactionalIdAuthorizationFailed => Refusal::Authorization {
            resource: "transactional id".into(),
            operation: "WRITE",
            detail,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals() -> Refusals {
        Refusals::new(Duration::from_secs(10), vec!["t".into()], Some("g".into()))
    }

    #[test]
    fn authentication_is_waited_out_for_the_bound_and_progress_forgets_it() {
        let r = refusals();
        let t0 = Instant::now();
        r.saw(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error",
        );
        assert!(r.due(t0).is_none());
        r.progress();
        assert!(
            r.due(t0 + Duration::from_secs(11)).is_none(),
            "progress forgot it"
        );
        r.saw(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "again",
        );
        let e = r
            .due(Instant::now() + Duration::from_secs(11))
            .expect("past the bound");
        assert!(
            e.to_string().contains("authentication failed: again"),
            "{e}"
        );
    }

    #[test]
    fn authorization_stops_at_once_and_names_the_resource() {
        let r = refusals();
        r.saw(
            &KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed),
            "",
        );
        r.progress();
        let e = r.due(Instant::now()).expect("at once");
        assert!(e.to_string().contains("READ on group g"), "{e}");
    }

    #[test]
    fn transport_errors_are_no_refusal() {
        let r = refusals();
        r.saw(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "down",
        );
        r.saw(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "cut",
        );
        assert!(r.seen().is_none());
    }
}
