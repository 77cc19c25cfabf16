//! A small authoritative DNS server over UDP for test zones, so the engine's MX resolution,
//! null-MX handling, failures and caching can be tested without the real DNS.
//!
//! - [`zone`]: the zone-file format and its parser ([`Zone`], [`ZoneError`]).
//! - `answer`: turning one query packet into one response packet (no I/O).
//! - [`server`]: the UDP loop ([`DnsServer`]).

mod answer;
pub mod server;
#[cfg(test)]
mod tests;
pub mod zone;

pub use server::DnsServer;
pub use zone::{Zone, ZoneError};
