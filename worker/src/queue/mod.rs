//! The cluster's work queue: one trait (`WorkQueue`) with an in-process implementation
//! (single-node mode, [`memory`]) and a JetStream one (cluster mode, [`jetstream`]), both with
//! the same at-least-once semantics, checked by the same tests (`worker/tests/it/queue.rs`).
//!
//! Semantics (both implementations):
//! - a lane is a work queue: a message is delivered to one puller at a time and removed when
//!   acknowledged; a delivery that is neither acknowledged, refused (`nak`) nor terminated within
//!   its ack wait is delivered again (a crashed worker loses nothing);
//! - a publish carries a message id; a second publish with the same id within the dedupe window
//!   changes nothing ([`Published::Duplicate`]);
//! - a message delivered `max_deliver` times without an ack, or terminated, becomes a
//!   [`DeadLetter`] on [`Lane::DeadLetters`] and is never delivered again on its own lane.
//!   Dead letters themselves are redelivered without limit (nothing is dropped silently).

pub mod jetstream;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use jetstream::JetStreamQueue;
pub use memory::MemoryQueue;

/// A queue of the cluster. Each lane is one JetStream stream with work-queue retention and one
/// durable pull consumer (all workers share the consumers of `Tasks` and `Apply`; the
/// coordinator pulls `Results` and `DeadLetters`). A new lane is one more variant here and in
/// [`Lane::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Lane {
    /// Captures and diffs.
    Tasks,
    Results,
    DeadLetters,
    /// Recoveries' apply tasks, apart from the others: they mostly wait on write budgets, and
    /// a long recovery's thousands of them must not hold back another tenant's backup.
    Apply,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Tasks, Lane::Results, Lane::DeadLetters, Lane::Apply];

    /// The lane a task of `kind` is published on.
    pub fn of_task(kind: rewind_common::wire::TaskKind) -> Lane {
        match kind {
            rewind_common::wire::TaskKind::Apply => Lane::Apply,
            _ => Lane::Tasks,
        }
    }

    /// The lane's name in subjects, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Tasks => "tasks",
            Lane::Results => "results",
            Lane::DeadLetters => "dead",
            Lane::Apply => "apply",
        }
    }

    /// The JetStream stream holding the lane.
    pub fn stream(self) -> &'static str {
        match self {
            Lane::Tasks => "REWIND_TASKS",
            Lane::Results => "REWIND_RESULTS",
            Lane::DeadLetters => "REWIND_DEAD",
            Lane::Apply => "REWIND_APPLY",
        }
    }

    /// The lane's durable consumer.
    pub fn consumer(self) -> &'static str {
        match self {
            Lane::Tasks => "rewind-tasks",
            Lane::Results => "rewind-results",
            Lane::DeadLetters => "rewind-dead",
            Lane::Apply => "rewind-apply",
        }
    }

    /// Every subject of the lane starts with this and a dot (`rewind.tasks`).
    pub fn subject_prefix(self) -> &'static str {
        match self {
            Lane::Tasks => "rewind.tasks",
            Lane::Results => "rewind.results",
            Lane::DeadLetters => "rewind.dead",
            Lane::Apply => "rewind.apply",
        }
    }

    /// The stream's subject filter (`rewind.tasks.>`).
    pub fn subjects(self) -> String {
        format!("{}.>", self.subject_prefix())
    }

    /// Whether an exhausted or terminated message of this lane becomes a dead letter. Dead
    /// letters are not dead-lettered again; they are redelivered until the coordinator takes
    /// them.
    pub fn dead_letters_apply(self) -> bool {
        self != Lane::DeadLetters
    }

    /// Index of the lane in [`Lane::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Lane::Tasks => 0,
            Lane::Results => 1,
            Lane::DeadLetters => 2,
            Lane::Apply => 3,
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Redelivery rules of the `Tasks` and `Results` lanes (the dead-letter lane has the same ack
/// wait and no delivery limit).
///
/// As in JetStream, when `backoff` is not empty it *replaces* the ack wait: delivery `n` is
/// redelivered after `backoff[n - 1]` (the last entry repeats) without an ack or progress.
/// JetStream itself sets the consumer's ack wait to `backoff[0]` (checked against nats-server
/// 2.15), so [`QueuePolicy::validate`] requires `ack_wait == backoff[0]`; each entry must be
/// long enough for a worker to send its first progress heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// How long a delivery may go without ack, nak, term or progress before it is redelivered
    /// (when `backoff` is empty).
    pub ack_wait: Duration,
    /// Deliveries of one message before it becomes a dead letter.
    pub max_deliver: u32,
    /// Ack waits of successive deliveries (JetStream's `BackOff`); empty: `ack_wait` always.
    pub backoff: Vec<Duration>,
    /// A publish repeating a message id seen within this window is dropped.
    pub dedupe_window: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self::production()
    }
}

impl QueuePolicy {
    /// Production defaults: 30 s ack wait, 5 deliveries, growing backoff, 2 min dedupe window.
    pub fn production() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: [30, 60, 120, 300].map(Duration::from_secs).to_vec(),
            dedupe_window: Duration::from_secs(120),
        }
    }

    /// Short waits for tests: 1 s ack wait, 3 deliveries, no backoff, 10 s dedupe window.
    pub fn for_tests() -> Self {
        Self {
            ack_wait: Duration::from_secs(1),
            max_deliver: 3,
            backoff: Vec::new(),
            dedupe_window: Duration::from_secs(10),
        }
    }

    /// Refuses what JetStream would refuse (or what would make no sense).
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |m: String| Err(QueueError::InvalidPolicy(m));
        if self.ack_wait.is_zero() {
            return bad("ack_wait must be more than zero".into());
        }
        if self.max_deliver == 0 {
            return bad("max_deliver must be at least 1".into());
        }
        if !self.backoff.is_empty() && self.max_deliver as usize <= self.backoff.len() {
            return bad(format!(
                "max_deliver ({}) must be more than the number of backoff entries ({}), as JetStream requires",
                self.max_deliver,
                self.backoff.len()
            ));
        }
        if let Some(first) = self.backoff.first() {
            if *first != self.ack_wait {
                return bad(format!(
                    "ack_wait ({:?}) must equal the first backoff entry ({first:?}): JetStream uses it as the ack wait",
                    self.ack_wait
                ));
            }
        }
        if self.backoff.iter().any(|d| d.is_zero()) {
            return bad("backoff entries must be more than zero".into());
        }
        if self.dedupe_window.is_zero() {
            return bad("dedupe_window must be more than zero".into());
        }
        Ok(())
    }

    /// How long delivery number `attempt` (from 1) waits for an ack before redelivery.
    pub fn ack_wait_for(&self, attempt: u32) -> Duration {
        match self.backoff.len() {
            0 => self.ack_wait,
            n => self.backoff[(attempt.max(1) as usize - 1).min(n - 1)],
        }
    }

    /// The delivery limit on a lane (`None`: unlimited, the dead-letter lane).
    pub fn max_deliver_on(&self, lane: Lane) -> Option<u32> {
        lane.dead_letters_apply().then_some(self.max_deliver)
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    New,
    /// The message id was seen within the dedupe window; nothing changed.
    Duplicate,
}

/// A message that exhausted its deliveries or was terminated, as published on
/// [`Lane::DeadLetters`] (rmp-serde with named fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub lane: Lane,
    pub subject: String,
    pub msg_id: String,
    pub attempts: u32,
    pub reason: String,
    pub payload: Bytes,
}

impl DeadLetter {
    /// Decodes a dead letter's payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, QueueError> {
        rmp_serde::from_slice(bytes).map_err(|e| QueueError::Decode(e.to_string()))
    }

    fn encode(&self) -> Result<Bytes, QueueError> {
        rmp_serde::to_vec_named(self)
            .map(Bytes::from)
            .map_err(|e| QueueError::Decode(e.to_string()))
    }

    /// The dead letter's subject, message id and payload on the dead-letter lane:
    /// `rewind.dead.<rest of the original subject>`, id `dead.<msg_id>` (so a second dead
    /// letter of the same message is a duplicate).
    pub(crate) fn envelope(&self) -> Result<(String, String, Bytes), QueueError> {
        let prefix = self.lane.subject_prefix();
        let rest = self
            .subject
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or(&self.subject);
        Ok((
            format!("{}.{rest}", Lane::DeadLetters.subject_prefix()),
            format!("dead.{}", self.msg_id),
            self.encode()?,
        ))
    }
}

/// The reason of a dead letter for a message that exhausted its deliveries.
pub fn exhausted_reason(deliveries: u32) -> String {
    format!("not acknowledged after {deliveries} deliveries")
}

/// A queue failure, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue policy: {0}")]
    InvalidPolicy(String),
    #[error("invalid subject {subject:?} for lane {lane}: subjects are `{prefix}.<token>[.<token>...]` without wildcards or spaces", prefix = lane.subject_prefix())]
    InvalidSubject { lane: Lane, subject: String },
    #[error("invalid subject filter {filter:?} for lane {lane}")]
    InvalidFilter { lane: Lane, filter: String },
    #[error(
        "invalid message id {0:?}: it must be non-empty, without spaces or control characters"
    )]
    InvalidMsgId(String),
    #[error("jetstream {op} on lane {lane} failed: {message}")]
    JetStream {
        lane: Lane,
        op: &'static str,
        message: String,
    },
    #[error("dead letter encoding failed: {0}")]
    Decode(String),
}

/// One delivery of a message to this puller. Settle it with exactly one of [`Delivery::ack`],
/// [`Delivery::nak`] or [`Delivery::term`]; a delivery dropped unsettled is redelivered after
/// its ack wait (as if the worker had crashed).
pub struct Delivery {
    pub subject: String,
    pub msg_id: String,
    pub payload: Bytes,
    /// Which delivery of the message this is, from 1.
    pub attempt: u32,
    /// Deliveries before it becomes a dead letter (`None`: no limit, the dead-letter lane).
    pub max_deliver: Option<u32>,
    pub lane: Lane,
    handle: Box<dyn DeliveryHandle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("lane", &self.lane)
            .field("subject", &self.subject)
            .field("msg_id", &self.msg_id)
            .field("attempt", &self.attempt)
            .field("max_deliver", &self.max_deliver)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What an implementation does to settle one delivery.
#[async_trait]
pub(crate) trait DeliveryHandle: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), QueueError>;
    async fn in_progress(&self) -> Result<(), QueueError>;
    /// Publishes the dead letter (unless `dead` is `None`), then terminates the message.
    async fn term(self: Box<Self>, dead: Option<DeadLetter>) -> Result<(), QueueError>;
}

impl Delivery {
    pub(crate) fn new(
        lane: Lane,
        subject: String,
        msg_id: String,
        payload: Bytes,
        attempt: u32,
        max_deliver: Option<u32>,
        handle: Box<dyn DeliveryHandle>,
    ) -> Self {
        Self {
            subject,
            msg_id,
            payload,
            attempt,
            max_deliver,
            lane,
            handle,
        }
    }

    /// Acknowledges the message: it is removed from its lane. Returns once the server (or the
    /// in-process queue) has confirmed it, so local state may be marked done after it.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.handle.ack().await
    }

    /// Gives the message back, to be delivered again after `delay` (counts as a delivery: the
    /// last allowed one refused makes a dead letter).
    pub async fn nak(self, delay: Duration) -> Result<(), QueueError> {
        self.handle.nak(delay).await
    }

    /// Tells the queue the work goes on: the ack wait starts again.
    pub async fn in_progress(&self) -> Result<(), QueueError> {
        self.handle.in_progress().await
    }

    /// Fails the message for good: publishes a [`DeadLetter`] with `reason` to
    /// [`Lane::DeadLetters`] (on the dead-letter lane itself, only terminates), then
    /// terminates the message, which is never delivered again.
    pub async fn term(self, reason: &str) -> Result<(), QueueError> {
        let dead = self.lane.dead_letters_apply().then(|| DeadLetter {
            lane: self.lane,
            subject: self.subject.clone(),
            msg_id: self.msg_id.clone(),
            attempts: self.attempt,
            reason: reason.to_owned(),
            payload: self.payload.clone(),
        });
        if dead.is_none() {
            tracing::warn!(subject = %self.subject, msg_id = %self.msg_id, reason, "dead letter terminated");
        }
        self.handle.term(dead).await
    }
}

/// The work queue of the cluster (see the module's semantics). Used as `Arc<dyn WorkQueue>`.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Publishes `payload` on `subject` (which must be within the lane) with the message id
    /// `msg_id` (`Nats-Msg-Id`).
    async fn publish(
        &self,
        lane: Lane,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<Published, QueueError>;

    /// Up to `max` deliveries, waiting at most `wait` for the first one (an empty vector when
    /// none came).
    async fn pull(
        &self,
        lane: Lane,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Removes the lane's messages whose subject matches `subject_filter` (NATS wildcards `*`
    /// and `>`), delivered or not; returns how many.
    async fn purge(&self, lane: Lane, subject_filter: &str) -> Result<u64, QueueError>;

    /// Messages in the lane not yet acknowledged (waiting or being worked on).
    async fn pending(&self, lane: Lane) -> Result<u64, QueueError>;
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
}

/// Checks that `subject` is a literal subject within `lane`.
pub(crate) fn check_subject(lane: Lane, subject: &str) -> Result<(), QueueError> {
    let ok = subject
        .strip_prefix(lane.subject_prefix())
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|rest| rest.split('.').all(valid_token));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidSubject {
            lane,
            subject: subject.to_owned(),
        })
    }
}

/// Checks that `filter` is a subject filter within `lane` (wildcards allowed).
pub(crate) fn check_filter(lane: Lane, filter: &str) -> Result<(), QueueError> {
    let tokens: Vec<&str> = filter.split('.').collect();
    let prefix: Vec<&str> = lane.subject_prefix().split('.').collect();
    let ok = tokens.len() > prefix.len()
        && tokens.iter().zip(&prefix).all(|(t, p)| t == p || *t == "*")
        && tokens
            .iter()
            .enumerate()
            .all(|(i, t)| *t == "*" || (*t == ">" && i == tokens.len() - 1) || valid_token(t));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidFilter {
            lane,
            filter: filter.to_owned(),
        })
    }
}

pub(crate) fn check_msg_id(msg_id: &str) -> Result<(), QueueError> {
    if !msg_id.is_empty()
        && msg_id
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control())
    {
        Ok(())
    } else {
        Err(QueueError::InvalidMsgId(msg_id.to_owned()))
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_filters() {
        assert!(subject_matches("rewind.tasks.>", "rewind.tasks.a.b"));
        assert!(!subject_matches("rewind.tasks.>", "rewind.tasks"));
        assert!(subject_matches("rewind.tasks.*.b", "rewind.tasks.a.b"));
        assert!(!subject_matches("rewind.tasks.*", "rewind.tasks.a.b"));
        assert!(check_subject(Lane::Tasks, "rewind.tasks.diff.j1").is_ok());
        assert!(check_subject(Lane::Tasks, "rewind.tasks").is_err());
        assert!(check_subject(Lane::Tasks, "rewind.tasks.*").is_err());
        assert!(check_subject(Lane::Tasks, "rewind.results.x").is_err());
        assert!(check_filter(Lane::Tasks, "rewind.tasks.j1.>").is_ok());
        assert!(check_filter(Lane::Tasks, "rewind.tasks.>.x").is_err());
        assert!(check_filter(Lane::Tasks, "rewind.results.>").is_err());
    }

    #[test]
    fn policy_validation() {
        assert!(QueuePolicy::production().validate().is_ok());
        assert!(QueuePolicy::for_tests().validate().is_ok());
        let bad = QueuePolicy {
            max_deliver: 4,
            ..QueuePolicy::production()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("max_deliver (4) must be more than"), "{err}");
        let odd = QueuePolicy {
            ack_wait: Duration::from_secs(10),
            ..QueuePolicy::production()
        };
        let err = odd.validate().unwrap_err().to_string();
        assert!(err.contains("must equal the first backoff entry"), "{err}");
        let p = QueuePolicy::production();
        assert_eq!(p.ack_wait_for(1), Duration::from_secs(30));
        assert_eq!(p.ack_wait_for(9), Duration::from_secs(300));
    }

    #[test]
    fn dead_letter_envelope() {
        let dead = DeadLetter {
            lane: Lane::Tasks,
            subject: "rewind.tasks.diff.j1".into(),
            msg_id: "m1".into(),
            attempts: 5,
            reason: exhausted_reason(5),
            payload: Bytes::from_static(b"x"),
        };
        let (subject, id, bytes) = dead.envelope().unwrap();
        assert_eq!(subject, "rewind.dead.diff.j1");
        assert_eq!(id, "dead.m1");
        assert_eq!(DeadLetter::decode(&bytes).unwrap(), dead);
    }
}
