//! hikyaku's load-test kit: an SMTP sink that counts deliveries per recipient, a test DNS
//! server, an enqueuer and a benchmark driver.
//!
//! # Layout
//! - [`sink`]: the fast SMTP sink with provider emulation and magic recipients, plus its
//!   HTTP stats endpoint.
//! - [`dns`]: a small authoritative UDP DNS server for test zones.
//! - [`enqueue`]: a campaign snapshot and N jobs straight into Redis.
//! - [`bench`]: the engine-mode benchmark; [`e2e`]: the whole system through the API (the
//!   demo); [`procs`], [`procstat`]: child processes, their CPU and memory; [`httpc`]: a tiny
//!   HTTP client for the API.
//! - [`mix`]: provider mixes (sites, engine limits, sink profiles, per-site rates);
//!   [`backlog`]: the memory run; [`compare`]: the Postfix smtp-source yardstick;
//!   [`latency`], [`promtext`]: enqueue → delivery latency from the engine's `/metrics`;
//!   [`dkim_cost`]: the DKIM-signing run's key and OpenSSL's raw sign rate.
//! - [`proxy`]: a TCP proxy that delays traffic or cuts it (fault scenarios).

pub mod backlog;
pub mod bench;
pub mod compare;
pub mod dkim_cost;
pub mod dns;
pub mod e2e;
pub mod enqueue;
pub mod httpc;
pub mod latency;
pub mod mix;
pub mod procs;
pub mod procstat;
pub mod promtext;
pub mod proxy;
pub mod sink;
