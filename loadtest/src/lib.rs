//! hikyaku's load-test kit: an SMTP sink that counts deliveries per recipient, a test DNS
//! server, an enqueuer and a benchmark driver.
//!
//! # Layout
//! - [`sink`]: the fast SMTP sink with provider emulation and magic recipients, plus its
//!   HTTP stats endpoint.
//! - [`dns`]: a small authoritative UDP DNS server for test zones.
//! - [`enqueue`]: a campaign snapshot and N jobs straight into Redis.
//! - [`bench`]: the benchmark and demo driver; [`procstat`] reads CPU and memory from `/proc`.

pub mod bench;
pub mod dns;
pub mod enqueue;
pub mod procstat;
pub mod sink;
