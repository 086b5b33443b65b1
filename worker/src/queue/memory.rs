//! The in-process work queue (single-node mode): the semantics of the JetStream lanes (ack
//! wait and backoff, nak delay, dedupe window, dead letters on exhaustion and term, purge) in
//! memory, driven by tokio timers. One sweeper task per queue expires unacknowledged
//! deliveries at their deadline; pullers sleep on a `Notify` until a message is ready.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    check_filter, check_msg_id, check_subject, exhausted_reason, subject_matches, DeadLetter,
    Delivery, DeliveryHandle, Lane, Published, QueueError, QueuePolicy, WorkQueue,
};

/// The in-process queue. Cloning shares the queue. Must be created inside a tokio runtime
/// (it spawns its sweeper task, which ends when the last clone is dropped).
#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

struct Inner {
    policy: QueuePolicy,
    lanes: [LaneState; 4],
    /// Wakes the sweeper: a new ack deadline, or the queue is gone.
    sweeper: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sweeper.notify_one();
    }
}

#[derive(Default)]
struct LaneState {
    data: Mutex<LaneData>,
    /// Wakes pullers: a message became ready (published, nak'ed, expired).
    ready: Notify,
}

#[derive(Default)]
struct LaneData {
    next_seq: u64,
    next_delivery: u64,
    messages: BTreeMap<u64, Message>,
    seen: HashMap<String, Instant>,
    seen_order: VecDeque<(Instant, String)>,
}

struct Message {
    subject: String,
    msg_id: String,
    payload: Bytes,
    deliveries: u32,
    state: State,
}

enum State {
    Ready { at: Instant },
    InFlight { delivery: u64, deadline: Instant },
}

fn lock(data: &Mutex<LaneData>) -> MutexGuard<'_, LaneData> {
    data.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryQueue {
    /// A new empty queue with `policy` (validated).
    pub fn new(policy: QueuePolicy) -> Result<Self, QueueError> {
        policy.validate()?;
        let sweeper = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            policy,
            lanes: Default::default(),
            sweeper: sweeper.clone(),
        });
        tokio::spawn(sweep(Arc::downgrade(&inner), sweeper));
        Ok(Self { inner })
    }
}

impl Inner {
    fn lane(&self, lane: Lane) -> &LaneState {
        &self.lanes[lane.index()]
    }

    fn publish_now(&self, lane: Lane, subject: &str, msg_id: &str, payload: Bytes) -> Published {
        let now = Instant::now();
        let window = self.policy.dedupe_window;
        let state = self.lane(lane);
        {
            let mut data = lock(&state.data);
            while let Some((at, _)) = data.seen_order.front() {
                if now.duration_since(*at) < window {
                    break;
                }
                if let Some((at, id)) = data.seen_order.pop_front() {
                    if data.seen.get(&id) == Some(&at) {
                        data.seen.remove(&id);
                    }
                }
            }
            if data.seen.contains_key(msg_id) {
                return Published::Duplicate;
            }
            data.seen.insert(msg_id.to_owned(), now);
            data.seen_order.push_back((now, msg_id.to_owned()));
            let seq = data.next_seq;
            data.next_seq += 1;
            data.messages.insert(
                seq,
                Message {
                    subject: subject.to_owned(),
                    msg_id: msg_id.to_owned(),
                    payload,
                    deliveries: 0,
                    state: State::Ready { at: now },
                },
            );
        }
        state.ready.notify_waiters();
        Published::New
    }

    fn publish_dead(&self, dead: &DeadLetter) {
        match dead.envelope() {
            Ok((subject, id, payload)) => {
                self.publish_now(Lane::DeadLetters, &subject, &id, payload);
            }
            Err(e) => tracing::error!(error = %e, msg_id = %dead.msg_id, "dead letter not encoded"),
        }
    }

    /// Takes up to `max` ready messages; else the instant the next one becomes ready.
    fn take(self: &Arc<Self>, lane: Lane, max: usize) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut next = None::<Instant>;
        let max_deliver = self.policy.max_deliver_on(lane);
        {
            let mut data = lock(&self.lane(lane).data);
            let data = &mut *data;
            for (seq, msg) in data.messages.iter_mut() {
                let State::Ready { at } = msg.state else {
                    continue;
                };
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                if out.len() == max {
                    break;
                }
                msg.deliveries += 1;
                let delivery = data.next_delivery;
                data.next_delivery += 1;
                msg.state = State::InFlight {
                    delivery,
                    deadline: now + self.policy.ack_wait_for(msg.deliveries),
                };
                out.push(Delivery::new(
                    lane,
                    msg.subject.clone(),
                    msg.msg_id.clone(),
                    msg.payload.clone(),
                    msg.deliveries,
                    max_deliver,
                    Box::new(MemoryDelivery {
                        inner: self.clone(),
                        lane,
                        seq: *seq,
                        delivery,
                    }),
                ));
            }
        }
        if !out.is_empty() {
            self.sweeper.notify_one();
        }
        (out, next)
    }

    /// Expires deliveries past their deadline; returns the next deadline.
    fn expire(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut next = None::<Instant>;
        let mut dead = Vec::new();
        for lane in Lane::ALL {
            let max_deliver = self.policy.max_deliver_on(lane);
            let state = self.lane(lane);
            let mut woke = false;
            {
                let mut data = lock(&state.data);
                let mut exhausted = Vec::new();
                for (seq, msg) in data.messages.iter_mut() {
                    let State::InFlight { deadline, .. } = msg.state else {
                        continue;
                    };
                    if deadline > now {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    } else if max_deliver.is_some_and(|m| msg.deliveries >= m) {
                        exhausted.push(*seq);
                    } else {
                        msg.state = State::Ready { at: now };
                        woke = true;
                    }
                }
                for seq in exhausted {
                    if let Some(msg) = data.messages.remove(&seq) {
                        dead.push(dead_letter(lane, msg, None));
                    }
                }
            }
            if woke {
                state.ready.notify_waiters();
            }
        }
        for d in &dead {
            tracing::warn!(subject = %d.subject, msg_id = %d.msg_id, attempts = d.attempts, "message exhausted its deliveries");
            self.publish_dead(d);
        }
        next
    }
}

fn dead_letter(lane: Lane, msg: Message, reason: Option<&str>) -> DeadLetter {
    DeadLetter {
        lane,
        reason: reason.map_or_else(|| exhausted_reason(msg.deliveries), str::to_owned),
        subject: msg.subject,
        msg_id: msg.msg_id,
        attempts: msg.deliveries,
        payload: msg.payload,
    }
}

async fn sweep(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = match inner.upgrade() {
            Some(inner) => inner.expire(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

struct MemoryDelivery {
    inner: Arc<Inner>,
    lane: Lane,
    seq: u64,
    delivery: u64,
}

impl MemoryDelivery {
    /// Runs `f` on the message if this delivery is still its current one.
    fn with_current<R>(&self, f: impl FnOnce(&mut LaneData, u64) -> R) -> Option<R> {
        let mut data = lock(&self.inner.lane(self.lane).data);
        let current = matches!(
            data.messages.get(&self.seq).map(|m| &m.state),
            Some(State::InFlight { delivery, .. }) if *delivery == self.delivery
        );
        current.then(|| f(&mut data, self.seq))
    }
}

#[async_trait]
impl DeliveryHandle for MemoryDelivery {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        // As in JetStream, an ack names the message, so a late ack of an earlier delivery
        // still removes it.
        lock(&self.inner.lane(self.lane).data)
            .messages
            .remove(&self.seq);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        let max_deliver = self.inner.policy.max_deliver_on(self.lane);
        let lane = self.lane;
        let exhausted = self.with_current(|data, seq| {
            let msg = data.messages.get_mut(&seq)?;
            if max_deliver.is_some_and(|m| msg.deliveries >= m) {
                data.messages
                    .remove(&seq)
                    .map(|m| dead_letter(lane, m, None))
            } else {
                msg.state = State::Ready {
                    at: Instant::now() + delay,
                };
                None
            }
        });
        match exhausted {
            Some(Some(dead)) => self.inner.publish_dead(&dead),
            Some(None) => self.inner.lane(self.lane).ready.notify_waiters(),
            None => {}
        }
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), QueueError> {
        let policy = &self.inner.policy;
        self.with_current(|data, seq| {
            if let Some(msg) = data.messages.get_mut(&seq) {
                if let State::InFlight { deadline, .. } = &mut msg.state {
                    *deadline = Instant::now() + policy.ack_wait_for(msg.deliveries);
                }
            }
        });
        Ok(())
    }

    async fn term(self: Box<Self>, dead: Option<DeadLetter>) -> Result<(), QueueError> {
        let removed = lock(&self.inner.lane(self.lane).data)
            .messages
            .remove(&self.seq)
            .is_some();
        if removed {
            if let Some(dead) = dead {
                self.inner.publish_dead(&dead);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn publish(
        &self,
        lane: Lane,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<Published, QueueError> {
        check_subject(lane, subject)?;
        check_msg_id(msg_id)?;
        Ok(self.inner.publish_now(lane, subject, msg_id, payload))
    }

    async fn pull(
        &self,
        lane: Lane,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let give_up = Instant::now() + wait;
        let state = self.inner.lane(lane);
        loop {
            let notified = state.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a message published meanwhile wakes us.
            notified.as_mut().enable();
            let (got, next) = self.inner.take(lane, max);
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok(got);
            }
            let until = next.map_or(give_up, |n| n.min(give_up));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn purge(&self, lane: Lane, subject_filter: &str) -> Result<u64, QueueError> {
        check_filter(lane, subject_filter)?;
        let mut data = lock(&self.inner.lane(lane).data);
        let before = data.messages.len();
        data.messages
            .retain(|_, m| !subject_matches(subject_filter, &m.subject));
        Ok((before - data.messages.len()) as u64)
    }

    async fn pending(&self, lane: Lane) -> Result<u64, QueueError> {
        Ok(lock(&self.inner.lane(lane).data).messages.len() as u64)
    }
}
