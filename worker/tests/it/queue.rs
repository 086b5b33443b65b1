//! `WorkQueue` semantics, each test a function over `Arc<dyn WorkQueue>` run against the
//! in-process queue and the JetStream queue (a nats-server of its own per test).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rewind_worker::nats::{connect, NatsError, NatsSettings};
use rewind_worker::queue::{
    DeadLetter, Delivery, JetStreamQueue, Lane, MemoryQueue, Published, QueuePolicy, WorkQueue,
};
use rewind_worker::testing::NatsServer;

type Queue = Arc<dyn WorkQueue>;

/// The queue under test and, for JetStream, its server (killed when the fixture drops).
struct Fixture {
    queue: Queue,
    _server: Option<NatsServer>,
}

fn memory(policy: QueuePolicy) -> Fixture {
    Fixture {
        queue: Arc::new(MemoryQueue::new(policy).unwrap()),
        _server: None,
    }
}

async fn jetstream(policy: QueuePolicy) -> Fixture {
    let server = NatsServer::start();
    let (client, js) = connect(&NatsSettings::url(server.url())).await.unwrap();
    let queue = JetStreamQueue::start(client, js, policy).await.unwrap();
    Fixture {
        queue: Arc::new(queue),
        _server: Some(server),
    }
}

/// Runs `$test(queue)` against both implementations with `$policy`.
macro_rules! both {
    ($test:ident) => {
        both!($test, QueuePolicy::for_tests());
    };
    ($test:ident, $policy:expr) => {
        mod $test {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let f = super::memory($policy);
                super::$test(f.queue.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jetstream() {
                let f = super::jetstream($policy).await;
                super::$test(f.queue.clone()).await;
            }
        }
    };
}

const SHORT: Duration = Duration::from_millis(200);
/// Longer than any ack wait or nak delay of the tests, with room for a loaded machine.
const LONG: Duration = Duration::from_secs(5);

async fn publish(q: &Queue, subject: &str, id: &str) -> Published {
    q.publish(
        Lane::Tasks,
        subject,
        id,
        Bytes::from(format!("payload of {id}")),
    )
    .await
    .unwrap()
}

async fn pull_one(q: &Queue, lane: Lane, wait: Duration) -> Option<Delivery> {
    let mut got = q.pull(lane, 1, wait).await.unwrap();
    assert!(got.len() <= 1);
    got.pop()
}

async fn dead_letter(q: &Queue) -> DeadLetter {
    let d = pull_one(q, Lane::DeadLetters, LONG)
        .await
        .expect("a dead letter");
    assert!(d.subject.starts_with("rewind.dead."), "{}", d.subject);
    assert!(d.msg_id.starts_with("dead."), "{}", d.msg_id);
    assert_eq!(d.max_deliver, None);
    let letter = DeadLetter::decode(&d.payload).unwrap();
    d.ack().await.unwrap();
    letter
}

/// `pending` settles (JetStream removes acknowledged and dead-lettered messages shortly after
/// confirming).
async fn wait_pending(q: &Queue, lane: Lane, want: u64) {
    let mut last = 0;
    for _ in 0..50 {
        last = q.pending(lane).await.unwrap();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pending on {lane} is {last}, expected {want}");
}

async fn publish_pull_ack(q: Queue) {
    assert_eq!(
        publish(&q, "rewind.tasks.diff.j1", "m1").await,
        Published::New
    );
    let d = pull_one(&q, Lane::Tasks, LONG).await.expect("a delivery");
    assert_eq!(d.subject, "rewind.tasks.diff.j1");
    assert_eq!(d.msg_id, "m1");
    assert_eq!(&d.payload[..], b"payload of m1");
    assert_eq!(d.attempt, 1);
    assert_eq!(d.max_deliver, Some(3));
    d.ack().await.unwrap();
    wait_pending(&q, Lane::Tasks, 0).await;
    assert!(pull_one(&q, Lane::Tasks, SHORT).await.is_none());
    // Results are a lane of their own.
    q.publish(
        Lane::Results,
        "rewind.results.j1",
        "r1",
        Bytes::from_static(b"r"),
    )
    .await
    .unwrap();
    let r = pull_one(&q, Lane::Results, LONG).await.expect("a result");
    assert_eq!(r.lane, Lane::Results);
    r.ack().await.unwrap();
}
both!(publish_pull_ack);

async fn refuses_subjects_outside_the_lane(q: Queue) {
    for subject in [
        "rewind.results.x",
        "rewind.tasks",
        "rewind.tasks.*",
        "rewind.tasks.a b",
    ] {
        assert!(q
            .publish(Lane::Tasks, subject, "m", Bytes::new())
            .await
            .is_err());
    }
    assert!(q
        .publish(Lane::Tasks, "rewind.tasks.a", "", Bytes::new())
        .await
        .is_err());
    assert!(q.purge(Lane::Tasks, "rewind.>").await.is_err());
}
both!(refuses_subjects_outside_the_lane);

async fn duplicate_msg_id_is_dropped(q: Queue) {
    assert_eq!(publish(&q, "rewind.tasks.a", "same").await, Published::New);
    assert_eq!(
        publish(&q, "rewind.tasks.a", "same").await,
        Published::Duplicate
    );
    assert_eq!(
        publish(&q, "rewind.tasks.b", "same").await,
        Published::Duplicate
    );
    assert_eq!(q.pending(Lane::Tasks).await.unwrap(), 1);
    let d = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    d.ack().await.unwrap();
    // Still within the window after the ack: the id is remembered, not the message.
    assert_eq!(
        publish(&q, "rewind.tasks.a", "same").await,
        Published::Duplicate
    );
    wait_pending(&q, Lane::Tasks, 0).await;
}
both!(duplicate_msg_id_is_dropped);

async fn dropped_delivery_is_redelivered_after_ack_wait(q: Queue) {
    publish(&q, "rewind.tasks.a", "m1").await;
    let first = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    drop(first); // the worker crashed
    assert!(
        pull_one(&q, Lane::Tasks, SHORT).await.is_none(),
        "not before the ack wait"
    );
    let again = pull_one(&q, Lane::Tasks, LONG).await.expect("redelivered");
    assert_eq!(again.msg_id, "m1");
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
    wait_pending(&q, Lane::Tasks, 0).await;
}
both!(dropped_delivery_is_redelivered_after_ack_wait);

async fn backoff_sets_the_ack_wait_of_each_delivery(q: Queue) {
    publish(&q, "rewind.tasks.a", "m1").await;
    let first = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    drop(first);
    let second = pull_one(&q, Lane::Tasks, LONG)
        .await
        .expect("after backoff[0]");
    assert_eq!(second.attempt, 2);
    drop(second);
    // The second delivery waits backoff[1] = 3 s.
    assert!(pull_one(&q, Lane::Tasks, Duration::from_millis(1500))
        .await
        .is_none());
    let third = pull_one(&q, Lane::Tasks, LONG)
        .await
        .expect("after backoff[1]");
    assert_eq!(third.attempt, 3);
    third.ack().await.unwrap();
}
both!(
    backoff_sets_the_ack_wait_of_each_delivery,
    QueuePolicy {
        backoff: vec![Duration::from_secs(1), Duration::from_secs(3)],
        ..QueuePolicy::for_tests()
    }
);

async fn nak_redelivers_after_its_delay(q: Queue) {
    publish(&q, "rewind.tasks.a", "m1").await;
    let d = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    d.nak(Duration::from_millis(600)).await.unwrap();
    assert!(
        pull_one(&q, Lane::Tasks, SHORT).await.is_none(),
        "not before the delay"
    );
    let again = pull_one(&q, Lane::Tasks, LONG).await.expect("redelivered");
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
}
both!(nak_redelivers_after_its_delay);

async fn in_progress_keeps_a_long_task(q: Queue) {
    publish(&q, "rewind.tasks.a", "m1").await;
    let d = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    // 2.4 s of work with heartbeats, past the 1 s ack wait.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        d.in_progress().await.unwrap();
        assert!(q
            .pull(Lane::Tasks, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
    }
    assert!(pull_one(&q, Lane::Tasks, SHORT).await.is_none());
    d.ack().await.unwrap();
    wait_pending(&q, Lane::Tasks, 0).await;
}
both!(in_progress_keeps_a_long_task);

async fn exhausted_message_becomes_a_dead_letter(q: Queue) {
    publish(&q, "rewind.tasks.diff.j1", "m1").await;
    for attempt in 1..=3 {
        let d = pull_one(&q, Lane::Tasks, LONG).await.expect("a delivery");
        assert_eq!(d.attempt, attempt);
        drop(d);
    }
    // JetStream notices the exhaustion when it would deliver again, so only while a pull
    // waits (workers always pull); nothing comes, and the message becomes a dead letter.
    assert!(pull_one(&q, Lane::Tasks, Duration::from_millis(2500))
        .await
        .is_none());
    let letter = dead_letter(&q).await;
    assert_eq!(letter.lane, Lane::Tasks);
    assert_eq!(letter.subject, "rewind.tasks.diff.j1");
    assert_eq!(letter.msg_id, "m1");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.reason, "not acknowledged after 3 deliveries");
    assert_eq!(&letter.payload[..], b"payload of m1");
    wait_pending(&q, Lane::Tasks, 0).await;
    assert!(pull_one(&q, Lane::Tasks, Duration::from_millis(1500))
        .await
        .is_none());
}
both!(exhausted_message_becomes_a_dead_letter);

/// The apply lane is apart from the tasks lane (a recovery's queued applies never stand
/// before a backup's capture), and an exhausted apply task becomes a dead letter too.
async fn the_apply_lane_is_apart_and_dead_letters_too(q: Queue) {
    let subject = "rewind.apply.acme.j1.apply.7";
    q.publish(Lane::Apply, subject, "a1", Bytes::from_static(b"apply"))
        .await
        .unwrap();
    publish(&q, "rewind.tasks.acme.j2.capture.0", "c1").await;
    assert!(q
        .publish(
            Lane::Apply,
            "rewind.tasks.acme.j1.apply.8",
            "a2",
            Bytes::new()
        )
        .await
        .is_err());
    let capture = pull_one(&q, Lane::Tasks, LONG).await.expect("the capture");
    assert_eq!(capture.subject, "rewind.tasks.acme.j2.capture.0");
    capture.ack().await.unwrap();
    assert!(pull_one(&q, Lane::Tasks, SHORT).await.is_none());
    for attempt in 1..=3 {
        let d = pull_one(&q, Lane::Apply, LONG)
            .await
            .expect("the apply task");
        assert_eq!((d.attempt, d.subject.as_str()), (attempt, subject));
        drop(d);
    }
    assert!(pull_one(&q, Lane::Apply, Duration::from_millis(2500))
        .await
        .is_none());
    let letter = dead_letter(&q).await;
    assert_eq!(
        (letter.lane, letter.subject.as_str(), letter.msg_id.as_str()),
        (Lane::Apply, subject, "a1")
    );
    wait_pending(&q, Lane::Apply, 0).await;
}
both!(the_apply_lane_is_apart_and_dead_letters_too);

async fn nak_of_the_last_delivery_makes_a_dead_letter(q: Queue) {
    publish(&q, "rewind.tasks.a", "m1").await;
    for _ in 1..=3 {
        let d = pull_one(&q, Lane::Tasks, LONG).await.expect("a delivery");
        d.nak(Duration::from_millis(50)).await.unwrap();
    }
    assert!(pull_one(&q, Lane::Tasks, Duration::from_millis(1000))
        .await
        .is_none());
    let letter = dead_letter(&q).await;
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.reason, "not acknowledged after 3 deliveries");
    wait_pending(&q, Lane::Tasks, 0).await;
}
both!(nak_of_the_last_delivery_makes_a_dead_letter);

async fn term_makes_a_dead_letter_and_is_never_redelivered(q: Queue) {
    publish(&q, "rewind.tasks.diff.j1", "m1").await;
    let d = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    d.term("malformed task: no tenant").await.unwrap();
    let letter = dead_letter(&q).await;
    assert_eq!(letter.reason, "malformed task: no tenant");
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.msg_id, "m1");
    wait_pending(&q, Lane::Tasks, 0).await;
    // Past the ack wait: nothing comes back.
    assert!(pull_one(&q, Lane::Tasks, Duration::from_millis(1500))
        .await
        .is_none());
    wait_pending(&q, Lane::DeadLetters, 0).await;
}
both!(term_makes_a_dead_letter_and_is_never_redelivered);

async fn purge_by_filter(q: Queue) {
    publish(&q, "rewind.tasks.j1.a", "1").await;
    publish(&q, "rewind.tasks.j1.b", "2").await;
    publish(&q, "rewind.tasks.j2.a", "3").await;
    publish(&q, "rewind.tasks.j3.b", "4").await;
    // A delivered, unacknowledged task is purged too.
    let held = q.pull(Lane::Tasks, 1, LONG).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(q.purge(Lane::Tasks, "rewind.tasks.j1.>").await.unwrap(), 2);
    assert_eq!(q.purge(Lane::Tasks, "rewind.tasks.*.b").await.unwrap(), 1);
    assert_eq!(
        q.purge(Lane::Tasks, "rewind.tasks.nothing.>")
            .await
            .unwrap(),
        0
    );
    wait_pending(&q, Lane::Tasks, 1).await;
    let d = pull_one(&q, Lane::Tasks, LONG).await.unwrap();
    assert_eq!(d.subject, "rewind.tasks.j2.a");
    d.ack().await.unwrap();
}
both!(purge_by_filter);

async fn pending_counts_waiting_and_delivered(q: Queue) {
    assert_eq!(q.pending(Lane::Tasks).await.unwrap(), 0);
    for i in 0..3 {
        publish(&q, "rewind.tasks.a", &format!("m{i}")).await;
    }
    assert_eq!(q.pending(Lane::Tasks).await.unwrap(), 3);
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(q.pull(Lane::Tasks, 2 - got.len(), LONG).await.unwrap());
    }
    assert_eq!(q.pending(Lane::Tasks).await.unwrap(), 3);
    got.pop().unwrap().ack().await.unwrap();
    wait_pending(&q, Lane::Tasks, 2).await;
    assert_eq!(q.pending(Lane::Results).await.unwrap(), 0);
}
both!(pending_counts_waiting_and_delivered);

async fn concurrent_pullers_never_share_a_message(q: Queue) {
    const N: usize = 40;
    for i in 0..N {
        publish(&q, &format!("rewind.tasks.t{i}"), &format!("m{i}")).await;
    }
    let puller = |q: Queue| {
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let got = q
                    .pull(Lane::Tasks, 3, Duration::from_millis(300))
                    .await
                    .unwrap();
                if got.is_empty() {
                    empty += 1;
                }
                held.extend(got);
            }
            held
        })
    };
    let (a, b) = (puller(q.clone()), puller(q.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut seen = HashSet::new();
    for d in a.iter().chain(&b) {
        assert_eq!(d.attempt, 1, "{} redelivered while held", d.msg_id);
        assert!(
            seen.insert(d.msg_id.clone()),
            "{} delivered twice",
            d.msg_id
        );
    }
    assert_eq!(seen.len(), N);
    for d in a.into_iter().chain(b) {
        d.ack().await.unwrap();
    }
    wait_pending(&q, Lane::Tasks, 0).await;
}
both!(
    concurrent_pullers_never_share_a_message,
    QueuePolicy {
        ack_wait: Duration::from_secs(30),
        ..QueuePolicy::for_tests()
    }
);

#[test]
fn a_policy_jetstream_would_refuse_is_refused() {
    let policy = QueuePolicy {
        max_deliver: 2,
        backoff: vec![Duration::from_secs(1); 2],
        ..QueuePolicy::for_tests()
    };
    let err = policy.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid queue policy: max_deliver (2) must be more than the number of backoff entries (2), as JetStream requires"
    );
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused() {
    let server = NatsServer::start_without_jetstream();
    let err = connect(&NatsSettings::url(server.url())).await.unwrap_err();
    assert!(matches!(err, NatsError::NoJetStream { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("has jetstream disabled"), "{message}");
    assert!(message.contains("(version 2."), "{message}");
    assert!(message.contains("start nats-server with -js"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_queue_keeps_working_after_a_server_restart() {
    let mut server = NatsServer::start();
    let (client, js) = connect(&NatsSettings::url(server.url())).await.unwrap();
    let q: Queue = Arc::new(
        JetStreamQueue::start(client, js, QueuePolicy::for_tests())
            .await
            .unwrap(),
    );
    publish(&q, "rewind.tasks.a", "before").await;
    server.restart();
    // Published before the restart, kept in the file store.
    let mut before = None;
    for _ in 0..40 {
        match q.pull(Lane::Tasks, 1, Duration::from_millis(500)).await {
            Ok(mut got) if !got.is_empty() => {
                before = got.pop();
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let before = before.expect("the message published before the restart");
    assert_eq!(before.msg_id, "before");
    before.ack().await.unwrap();
    let mut published = false;
    for _ in 0..40 {
        if q.publish(
            Lane::Tasks,
            "rewind.tasks.a",
            "after",
            Bytes::from_static(b"x"),
        )
        .await
        .is_ok()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "publish after restart");
    let d = pull_one(&q, Lane::Tasks, LONG)
        .await
        .expect("pulled after restart");
    assert_eq!(d.msg_id, "after");
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_start_is_idempotent_and_applies_the_policy() {
    let server = NatsServer::start();
    let (client, js) = connect(&NatsSettings::url(server.url())).await.unwrap();
    JetStreamQueue::start(client.clone(), js.clone(), QueuePolicy::for_tests())
        .await
        .unwrap();
    let production = QueuePolicy::production();
    JetStreamQueue::start(client, js.clone(), production.clone())
        .await
        .unwrap();
    let stream = js.get_stream(Lane::Tasks.stream()).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(Lane::Tasks.consumer()).await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    assert_eq!(config.ack_wait, production.ack_wait);
    assert_eq!(config.max_deliver, 5);
    assert_eq!(config.backoff, production.backoff);
    assert_eq!(config.filter_subject, "");
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.config.duplicate_window, production.dedupe_window);
}
