//! The work queue over NATS JetStream (cluster mode): one work-queue stream and one durable,
//! unfiltered pull consumer per lane, created or updated idempotently at start; dead letters
//! for exhausted messages are made from the server's max-deliveries advisories.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self as js, AckKind, Context};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::task::JoinHandle;

use super::{
    check_filter, check_msg_id, check_subject, exhausted_reason, DeadLetter, Delivery,
    DeliveryHandle, Lane, Published, QueueError, QueuePolicy, WorkQueue,
};

/// Deliveries a lane's consumer may have outstanding (unacknowledged) across all pullers: it
/// bounds the work in flight (workers × batch must stay below it) and how much a stuck pool
/// can hold back before the server stops delivering.
pub const MAX_ACK_PENDING: i64 = 1024;

/// The queue group of the advisory subscriptions: one process handles each advisory.
const ADVISORY_GROUP: &str = "rewind-dead-letters";

/// The JetStream queue. Cloning shares it; the advisory listeners stop with the last clone.
#[derive(Clone)]
pub struct JetStreamQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

struct Inner {
    js: Context,
    policy: QueuePolicy,
    lanes: Vec<LaneHandle>,
    listeners: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

struct LaneHandle {
    stream: Stream,
    consumer: PullConsumer,
}

fn err(lane: Lane, op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> QueueError {
    move |e| QueueError::JetStream {
        lane,
        op,
        message: e.to_string(),
    }
}

macro_rules! js_try {
    ($lane:expr, $op:literal, $e:expr) => {
        $e.map_err(|e| err($lane, $op)(&e))?
    };
}

impl JetStreamQueue {
    /// Creates (or updates to `policy`) every lane's stream and consumer, and starts listening
    /// to max-deliveries advisories. Safe to run from every process at once.
    pub async fn start(
        client: async_nats::Client,
        js: Context,
        policy: QueuePolicy,
    ) -> Result<Self, QueueError> {
        policy.validate()?;
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            js_try!(
                lane,
                "create stream",
                js.create_or_update_stream(stream::Config {
                    name: lane.stream().to_owned(),
                    subjects: vec![lane.subjects()],
                    retention: RetentionPolicy::WorkQueue,
                    storage: StorageType::File,
                    duplicate_window: policy.dedupe_window,
                    ..Default::default()
                })
                .await
            );
            let stream = js_try!(lane, "get stream", js.get_stream(lane.stream()).await);
            let max_deliver = policy.max_deliver_on(lane);
            let consumer: PullConsumer = js_try!(
                lane,
                "create consumer",
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some(lane.consumer().to_owned()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: policy.ack_wait,
                        max_deliver: max_deliver.map_or(-1, i64::from),
                        backoff: if max_deliver.is_some() {
                            policy.backoff.clone()
                        } else {
                            Vec::new()
                        },
                        max_ack_pending: MAX_ACK_PENDING,
                        ..Default::default()
                    })
                    .await
            );
            lanes.push(LaneHandle { stream, consumer });
        }
        let mut listeners = Vec::new();
        for lane in Lane::ALL.into_iter().filter(|l| l.dead_letters_apply()) {
            let subject = format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
                lane.stream(),
                lane.consumer()
            );
            let sub = js_try!(
                lane,
                "subscribe to max-deliveries advisories",
                client.queue_subscribe(subject, ADVISORY_GROUP.into()).await
            );
            let stream = lanes[lane.index()].stream.clone();
            listeners.push(tokio::spawn(listen(lane, sub, js.clone(), stream)));
        }
        // The subscriptions must be known to the server before a message can exhaust.
        js_try!(Lane::Tasks, "flush", client.flush().await);
        Ok(Self {
            inner: Arc::new(Inner {
                js,
                policy,
                lanes,
                listeners,
            }),
        })
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.inner.policy
    }

    fn lane(&self, lane: Lane) -> &LaneHandle {
        &self.inner.lanes[lane.index()]
    }

    fn delivery(&self, lane: Lane, msg: js::Message) -> Result<Delivery, QueueError> {
        let info = js_try!(lane, "read delivery info", msg.info());
        let (seq, delivered) = (info.stream_sequence, info.delivered);
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("seq.{seq}"));
        Ok(Delivery::new(
            lane,
            msg.subject.to_string(),
            msg_id,
            msg.payload.clone(),
            u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
            self.inner.policy.max_deliver_on(lane),
            Box::new(JetStreamDelivery {
                js: self.inner.js.clone(),
                lane,
                msg,
            }),
        ))
    }

    async fn fetch(
        &self,
        lane: Lane,
        max: usize,
        wait: Option<Duration>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let consumer = &self.lane(lane).consumer;
        let mut messages = match wait {
            None => js_try!(
                lane,
                "fetch",
                consumer.fetch().max_messages(max).messages().await
            ),
            Some(wait) => js_try!(
                lane,
                "pull",
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
            ),
        };
        while let Some(msg) = messages.next().await {
            let msg = js_try!(lane, "pull", msg);
            out.push(self.delivery(lane, msg)?);
        }
        Ok(())
    }
}

/// The payload of `io.nats.jetstream.advisory.v1.max_deliver`.
#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u32,
}

async fn listen(lane: Lane, mut sub: async_nats::Subscriber, js: Context, stream: Stream) {
    while let Some(advisory) = sub.next().await {
        let parsed: MaxDeliveries = match serde_json::from_slice(&advisory.payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(lane = %lane, error = %e, "max-deliveries advisory not understood");
                continue;
            }
        };
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match dead_letter_exhausted(lane, &js, &stream, &parsed).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(lane = %lane, seq = parsed.stream_seq, attempt, error = %e, "dead letter of an exhausted message failed");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

/// The message stays in a work-queue stream after its last delivery: read it, publish its dead
/// letter, then delete it. Idempotent (a second run finds no message, or publishes a duplicate).
async fn dead_letter_exhausted(
    lane: Lane,
    js: &Context,
    stream: &Stream,
    advisory: &MaxDeliveries,
) -> Result<(), QueueError> {
    let msg = match stream.get_raw_message(advisory.stream_seq).await {
        Ok(m) => m,
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => return Err(err(lane, "read exhausted message")(&e)),
    };
    let dead = DeadLetter {
        lane,
        subject: msg.subject.to_string(),
        msg_id: msg
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("seq.{}", advisory.stream_seq)),
        attempts: advisory.deliveries,
        reason: exhausted_reason(advisory.deliveries),
        payload: msg.payload,
    };
    tracing::warn!(lane = %lane, subject = %dead.subject, msg_id = %dead.msg_id, attempts = dead.attempts, "message exhausted its deliveries");
    publish_dead(js, &dead).await?;
    js_try!(
        lane,
        "delete exhausted message",
        stream.delete_message(advisory.stream_seq).await
    );
    Ok(())
}

async fn publish_dead(js: &Context, dead: &DeadLetter) -> Result<(), QueueError> {
    let (subject, id, payload) = dead.envelope()?;
    publish(js, Lane::DeadLetters, subject, &id, payload).await?;
    Ok(())
}

async fn publish(
    js: &Context,
    lane: Lane,
    subject: String,
    msg_id: &str,
    payload: Bytes,
) -> Result<Published, QueueError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    let ack = js_try!(
        lane,
        "publish",
        js.publish_with_headers(subject, headers, payload).await
    );
    let ack = js_try!(lane, "publish (server ack)", ack.await);
    Ok(if ack.duplicate {
        Published::Duplicate
    } else {
        Published::New
    })
}

struct JetStreamDelivery {
    js: Context,
    lane: Lane,
    msg: js::Message,
}

#[async_trait]
impl DeliveryHandle for JetStreamDelivery {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        js_try!(self.lane, "ack", self.msg.double_ack().await);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        js_try!(
            self.lane,
            "nak",
            self.msg.ack_with(AckKind::Nak(Some(delay))).await
        );
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), QueueError> {
        js_try!(
            self.lane,
            "in progress",
            self.msg.ack_with(AckKind::Progress).await
        );
        Ok(())
    }

    async fn term(self: Box<Self>, dead: Option<DeadLetter>) -> Result<(), QueueError> {
        if let Some(dead) = &dead {
            publish_dead(&self.js, dead).await?;
        }
        js_try!(
            self.lane,
            "term",
            self.msg.double_ack_with(AckKind::Term).await
        );
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for JetStreamQueue {
    async fn publish(
        &self,
        lane: Lane,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<Published, QueueError> {
        check_subject(lane, subject)?;
        check_msg_id(msg_id)?;
        publish(&self.inner.js, lane, subject.to_owned(), msg_id, payload).await
    }

    async fn pull(
        &self,
        lane: Lane,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        // What is there now, without waiting.
        self.fetch(lane, max, None, &mut out).await?;
        if out.is_empty() && wait >= Duration::from_millis(10) {
            // Wait for one (a pull request for more would wait for all of them or its expiry),
            // then take what else is there.
            self.fetch(lane, 1, Some(wait), &mut out).await?;
            if !out.is_empty() && max > 1 {
                self.fetch(lane, max - 1, None, &mut out).await?;
            }
        }
        Ok(out)
    }

    async fn purge(&self, lane: Lane, subject_filter: &str) -> Result<u64, QueueError> {
        check_filter(lane, subject_filter)?;
        let purged = js_try!(
            lane,
            "purge",
            self.lane(lane).stream.purge().filter(subject_filter).await
        );
        Ok(purged.purged)
    }

    async fn pending(&self, lane: Lane) -> Result<u64, QueueError> {
        let info = js_try!(lane, "stream info", self.lane(lane).stream.get_info().await);
        Ok(info.state.messages)
    }
}
