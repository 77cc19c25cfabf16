//! Outcomes: what an attempt's result means and where the job goes next.
//!
//! - [`classify`]: the one outcome classifier (delivered / deferred / bounced and why), and
//!   how a session's error reads as an attempt.
//! - [`report`]: applies the verdict — counts it and hands the job to its shard's flusher as
//!   finished or deferred.
//! - [`retry`]: the backoff schedule.

pub mod classify;
pub mod report;
pub mod retry;
