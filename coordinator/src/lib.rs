//! The coordinator as a library: its durable state (and, later, its API, scheduler and dispatch).

pub mod state;
