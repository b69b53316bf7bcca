//! The seams to the outside world, each a trait or a type the tests replace:
//! [`consumer`] (the Kafka consumer the poll thread owns; rdkafka's implements it),
//! [`record_queue`] (the queue the consumer's records arrive on, apart from its events),
//! [`sink`] (where outputs and dead letters go: a Kafka producer or PostgreSQL), and
//! `fake` (a scripted consumer and producer for the engine's unit tests).

pub(in crate::engine) mod consumer;
#[cfg(test)]
pub(in crate::engine) mod fake;
pub(in crate::engine) mod record_queue;
pub(crate) mod sink;
