//! Per-recipient counters: how often each address was tried and accepted, so tests can prove
//! exactly-once delivery.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Number of independently locked shards; a power of two so the shard is a mask of the hash.
const SHARDS: usize = 64;

/// Counters of one recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecipientCounts {
    /// RCPT commands naming this address, whatever the reply.
    pub attempts: u32,
    /// Messages accepted (end-of-DATA 250) with this address among the recipients.
    pub accepted: u32,
}

/// Map shard keyed by the normalised address.
type Shard = HashMap<Box<str>, RecipientCounts, BuildHasherDefault<Fnv>>;

/// A sharded map from normalised (lower-cased) address to its counters. Each update locks one
/// shard once, so sessions on different cores rarely contend.
#[derive(Debug)]
pub struct Tally {
    /// The shards, chosen by the address's hash.
    shards: Box<[Mutex<Shard>]>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Tally {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Records one RCPT for `address` (already normalised) and returns the attempts so far,
    /// this one included. Allocates only the first time an address is seen.
    pub fn attempt(&self, address: &str) -> u32 {
        self.update(address, |counts| {
            counts.attempts = counts.attempts.saturating_add(1);
            counts.attempts
        })
    }

    /// Records one accepted message for `address` (already normalised) and returns how many
    /// times it had been accepted before this one.
    pub fn accept(&self, address: &str) -> u32 {
        self.update(address, |counts| {
            let before = counts.accepted;
            counts.accepted = before.saturating_add(1);
            before
        })
    }

    /// Applies `change` to the counters of `address` under its shard's lock, creating them
    /// (the only allocation) on first sight.
    fn update(&self, address: &str, change: impl FnOnce(&mut RecipientCounts) -> u32) -> u32 {
        let mut shard = self.shard(address);
        if let Some(counts) = shard.get_mut(address) {
            return change(counts);
        }
        change(shard.entry(address.into()).or_default())
    }

    /// The counters of `address` (already normalised); zero if never seen.
    pub fn get(&self, address: &str) -> RecipientCounts {
        self.shard(address)
            .get(address)
            .copied()
            .unwrap_or_default()
    }

    /// Locks the shard `address` belongs to. A poisoned lock still holds valid counters
    /// (updates are single field writes), so poisoning is ignored.
    fn shard(&self, address: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = Fnv::default();
        hasher.write(address.as_bytes());
        let index = (hasher.finish() as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

/// Normalises an address for counting: lower-cased, so `Bob@X.test` and `bob@x.test` are one
/// recipient. Writes into `into` (reusing its allocation).
pub fn normalise_into(address: &[u8], into: &mut String) {
    into.clear();
    match std::str::from_utf8(address) {
        Ok(text) if text.is_ascii() => {
            into.push_str(text);
            into.make_ascii_lowercase();
        }
        Ok(text) => into.push_str(&text.to_lowercase()),
        Err(_) => into.push_str(&String::from_utf8_lossy(address).to_lowercase()),
    }
}

/// FNV-1a: a fast hash for short keys. Hash flooding is not a concern on a loopback test
/// server, and SipHash would be a visible share of the per-message cost.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_attempts_and_acceptances_separately() {
        let t = Tally::new();
        assert_eq!(t.attempt("a@x.test"), 1);
        assert_eq!(t.attempt("a@x.test"), 2);
        assert_eq!(t.accept("a@x.test"), 0);
        assert_eq!(t.accept("a@x.test"), 1);
        assert_eq!(
            t.get("a@x.test"),
            RecipientCounts {
                attempts: 2,
                accepted: 2
            }
        );
        assert_eq!(t.get("b@x.test"), RecipientCounts::default());
    }

    #[test]
    fn normalises_case() {
        let mut s = String::new();
        normalise_into(b"Bob@X.Test", &mut s);
        assert_eq!(s, "bob@x.test");
        normalise_into("ÄNNE@x.test".as_bytes(), &mut s);
        assert_eq!(s, "änne@x.test");
    }
}
