//! Tests of the configuration: validation, serde forms, client properties.
use super::*;
use crate::commit::{CommitMode, CommitPolicy};

#[test]
fn debug_never_shows_a_secret_and_every_client_gets_the_shared_properties() {
    let mut c = Config::new("b:9093", "g", ["t"]);
    c.client_properties
        .insert("sasl.password".into(), "hunter2-client".into());
    c.client_properties
        .insert("security.protocol".into(), "SASL_SSL".into());
    c.consumer_properties
        .insert("ssl.key.password".into(), "hunter2-consumer".into());
    c.producer_properties.insert(
        "sasl.oauthbearer.client.secret".into(),
        "hunter2-producer".into(),
    );
    let shown = format!("{c:?} {c:#?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("SASL_SSL"));
    for properties in [
        c.consumer_client_properties(),
        c.producer_client_properties(),
    ] {
        assert_eq!(properties["sasl.password"], "hunter2-client");
        assert_eq!(properties["security.protocol"], "SASL_SSL");
        assert_eq!(properties["bootstrap.servers"], "b:9093");
    }
    assert_eq!(c.connection().properties["security.protocol"], "SASL_SSL");
}

#[test]
fn a_postgres_password_never_shows() {
    let mut c = Config::new("b:9092", "g", ["t"]);
    c.sink = SinkConfig::Postgres(PostgresSink::new(
        "postgresql://app:pg-s3cret@db:5432/x",
        "t",
    ));
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("pg-s3cret") && shown.contains("app:[redacted]@db:5432/x"),
        "{shown}"
    );
    let kv = PostgresSink::new("host=db user=app password=pg-s3cret", "t");
    assert!(!format!("{kv:?}").contains("pg-s3cret"));
}

#[test]
fn deserializes_with_defaults() {
    let c: Config = serde_json::from_str(
        r#"{"brokers":"b:9092","membership":{"group":{"group_id":"g","topics":["t"]}},
            "sink":{"type":"topic","topic":"out"},
            "consumer_properties":{"enable.auto.commit":"true","fetch.max.bytes":"1000"}}"#,
    )
    .unwrap();
    assert_eq!(c.commits.policy, CommitPolicy::EveryMs(1000));
    assert_eq!(c.commits.mode, CommitMode::Async);
    assert_eq!(
        c.sink,
        SinkConfig::Topic {
            topic: "out".into()
        }
    );
    let cc = c.consumer_client_config();
    assert_eq!(cc.get("enable.auto.commit"), Some("false"));
    assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    assert_eq!(cc.get("fetch.max.bytes"), Some("1000"));
    c.validate().unwrap();
    assert_eq!(c.flow, FlowConfig::default());
}

#[test]
fn a_group_names_only_what_it_changes_and_refuses_unknown_fields() {
    let c: Config = serde_json::from_str(
        r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},
            "flow":{"max_in_flight_records":5000},"commits":{"policy":{"every_ms":50}}}"#,
    )
    .unwrap();
    assert_eq!(c.flow.max_in_flight_records, 5000);
    assert_eq!(
        c.flow.max_in_flight_bytes,
        FlowConfig::default().max_in_flight_bytes
    );
    assert_eq!(c.commits.policy, CommitPolicy::EveryMs(50));
    assert_eq!(c.commits.mode, CommitMode::Async);
    let err = serde_json::from_str::<Config>(
        r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},
            "flow":{"max_in_flight_record":5000}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_in_flight_record"), "{err}");
}

#[test]
fn rejects_bad_values() {
    let mut c = Config::new("b:1", "g", ["t"]);
    c.workers = 0;
    assert!(matches!(c.validate(), Err(Error::Config(m)) if m.starts_with("workers")));
    let mut c = Config::new("b:1", "g", ["t"]);
    c.sink = SinkConfig::Topic { topic: "t".into() };
    assert!(c.validate().is_err());
    let mut c = Config::new("b:1", "g", ["t"]);
    c.consumer_properties
        .insert("max.poll.interval.ms".into(), "5000".into());
    assert!(
        matches!(c.validate(), Err(Error::Config(m)) if m.starts_with("lifecycle.drain_timeout"))
    );
    c.lifecycle.drain_timeout = std::time::Duration::from_millis(4000);
    c.validate().unwrap();
    let mut c = Config::new("b:1", "g", ["t"]);
    c.delivery = Delivery::ExactlyOnce;
    assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("sink")));
    c.sink = SinkConfig::Topic { topic: "o".into() };
    c.validate().unwrap();
    assert_eq!(
        c.consumer_client_config().get("isolation.level"),
        Some("read_committed")
    );
    assert!(c.producer_client_config().get("transactional.id").is_some());
    let free = Config::free("b:1", vec!["t:0".parse().unwrap(), "t:2".parse().unwrap()]);
    free.validate().unwrap();
    assert_eq!(free.input_topics(), vec!["t".to_string()]);
    assert!(free
        .consumer_client_config()
        .get("group.id")
        .is_some_and(|g| g.starts_with("tidemark-free-")));
    assert!(Config::free("b:1", vec![]).validate().is_err());
    assert!("t".parse::<TopicPartition>().is_err());
    assert!("t:-1".parse::<TopicPartition>().is_err());
    let mut auto = Config::new("b:1", "g", ["t"]);
    auto.commits.policy = CommitPolicy::Auto(250);
    let cc = auto.consumer_client_config();
    assert_eq!(cc.get("enable.auto.commit"), Some("true"));
    assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    assert_eq!(cc.get("auto.commit.interval.ms"), Some("250"));
    assert_eq!("offset:5".parse(), Ok(StartPosition::Offset(5)));
    assert_eq!("timestamp:7".parse(), Ok(StartPosition::Timestamp(7)));
    assert_eq!("end".parse(), Ok(StartPosition::End));
    assert!("offset:-1".parse::<StartPosition>().is_err());
    assert!(serde_json::from_str::<Config>(
        r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},"wrokers":3}"#
    )
    .is_err());
}

#[test]
fn durations_take_milliseconds_units_and_their_old_names() {
    use std::time::Duration;
    let c: Config = serde_json::from_str(
        r#"{"brokers": "b", "membership": {"group": {"group_id": "g", "topics": ["t"]}},
            "flow": {"poll_timeout": 50},
            "lifecycle": {"drain_timeout": "2s", "exit_when_idle_ms": 1500},
            "observability": {"lag_refresh": "0s", "stuck_threshold": "1m 30s"},
            "failures": {"retry": {"initial_backoff": "250ms", "max_backoff_ms": 4000}}}"#,
    )
    .unwrap();
    assert_eq!(c.flow.poll_timeout, Duration::from_millis(50));
    assert_eq!(c.lifecycle.drain_timeout, Duration::from_secs(2));
    assert_eq!(
        c.lifecycle.exit_when_idle,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(c.lifecycle.startup_timeout, Duration::from_secs(10));
    assert_eq!(c.observability.lag_refresh, Duration::ZERO);
    assert_eq!(c.observability.stuck_threshold, Duration::from_secs(90));
    assert_eq!(c.failures.retry.initial_backoff, Duration::from_millis(250));
    assert_eq!(c.failures.retry.max_backoff, Duration::from_secs(4));
    // Written back as milliseconds, and read again the same.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["lifecycle"]["drain_timeout"], 2000);
    let again: Config = serde_json::from_value(json).unwrap();
    assert_eq!(again.lifecycle, c.lifecycle);
    let err = serde_json::from_str::<Config>(
        r#"{"brokers": "b", "membership": {"group": {"group_id": "g", "topics": ["t"]}},
            "lifecycle": {"drain_timeout": "soon"}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"soon\""), "{err}");
}
