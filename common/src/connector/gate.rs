//! The gate every recovery write passes through before it is sent: the tenant's shared write
//! budget (one budget for all workers, AIMD: it climbs while writes succeed and is cut on a
//! 429) and the job's stop signal (a canceled job sends nothing more). The connector only
//! calls it; the worker implements it over the cluster's shared state.

use std::time::Duration;

/// Which of the directory's write limits a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriteClass {
    /// Writes to directory objects (Graph: 20 per second per app and tenant by default).
    Directory,
    /// Conditional access policies and named locations (Graph: 1 per second per tenant).
    ConditionalAccess,
}

/// Why the gate refuses to let more writes through: the job was stopped (canceled).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GateClosed(pub String);

/// What a recovery's writes pass through. Blocking: the connector runs on worker threads.
pub trait WriteGate: Send + Sync {
    /// The most writes of `class` one request may carry now (a `$batch` never holds more, nor
    /// more than Graph's 20): a budget keeps a batch within the rate it allows. At least 1.
    fn max_batch(&self, _class: WriteClass) -> usize {
        usize::MAX
    }

    /// Whether writes may still go (the stop signal), reserving nothing: the connector asks
    /// while it waits out a `Retry-After`, so that a canceled job stops within a second.
    fn check(&self) -> Result<(), GateClosed> {
        Ok(())
    }

    /// Waits until `writes` requests of `class` may be sent under the tenant's budget, or
    /// refuses when the job must stop; the connector then sends nothing more.
    fn admit(&self, class: WriteClass, writes: u32) -> Result<(), GateClosed>;

    /// What the directory answered to `sent` admitted requests of `class`: how many were
    /// throttled (429), with the longest `Retry-After` among them.
    fn feedback(&self, class: WriteClass, sent: u32, throttled: u32, retry_after: Option<Duration>);
}

/// A gate that lets everything through at once (no budget, never stopped).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenGate;

impl WriteGate for OpenGate {
    fn admit(&self, _class: WriteClass, _writes: u32) -> Result<(), GateClosed> {
        Ok(())
    }

    fn feedback(&self, _: WriteClass, _: u32, _: u32, _: Option<Duration>) {}
}
