//! The worker's integration tests (one binary): transport semantics written once and run
//! against both implementations (in-process and JetStream on a real nats-server).

mod blobs;
mod queue;
