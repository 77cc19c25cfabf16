//! How many messages a pipelining session may have *in doubt* at once: content written in
//! full, final reply not yet read. Only those can be delivered twice. When a session breaks
//! (a cut connection, a line that is not a reply, a timeout), the server may have accepted any
//! of them before it went: they go again, and each one it did accept is a duplicate. Messages
//! whose MAIL or RCPT were refused, or whose reply was read, are never in doubt.
//!
//! So a site's limit starts at the pipelining window (a healthy server costs nothing) and
//! halves with each loss of messages in doubt, down to one; it grows back by one for every
//! [`GROW_EVERY`] messages answered since. A server that breaks sessions often (every few
//! hundred messages) settles at one or two messages in doubt — at most one duplicate per fault,
//! for a round trip per message on that site only; one that broke once is back at the full
//! window after some 8,000 messages (a fraction of a second at full speed).
//!
//! The client never resynchronises after a line that is not a reply: with every message of a
//! window answered `250`, no count of the lines that follow proves which message a reply
//! belongs to, and a reply taken for the wrong message loses or doubles mail. Shrinking what is
//! in doubt is the safe way to bound the cost of such faults.

use std::sync::atomic::{AtomicU32, Ordering};

/// Messages answered (since the last loss, or the last growth) for the limit to grow by one.
pub const GROW_EVERY: u32 = 256;

/// One site's limit on messages in doubt per session.
#[derive(Debug)]
pub struct InDoubt {
    /// The limit now, 1 ..= `max`.
    limit: AtomicU32,
    /// Answers counted toward the next growth.
    answered: AtomicU32,
    /// The full window.
    max: u32,
}

impl InDoubt {
    /// A limit that starts at (and never passes) `max` messages.
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        InDoubt {
            limit: AtomicU32::new(max),
            answered: AtomicU32::new(0),
            max,
        }
    }

    /// Messages a session may have in doubt now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed) as usize
    }

    /// A message in doubt was answered (whatever the reply said). Returns the new limit when
    /// it grew.
    pub fn answered(&self) -> Option<usize> {
        if self.limit.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        let n = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        if n < GROW_EVERY
            || self
                .answered
                .compare_exchange(n, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        self.limit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some((l + 1).min(self.max))
            })
            .ok()
            .map(|old| (old + 1).min(self.max) as usize)
    }

    /// A session broke with `unanswered` messages in doubt: the limit halves (from what was in
    /// doubt, if that was less), at least one. Returns the new limit.
    pub fn lost(&self, unanswered: usize) -> usize {
        if unanswered == 0 {
            return self.limit();
        }
        self.answered.store(0, Ordering::Relaxed);
        let held = u32::try_from(unanswered).unwrap_or(u32::MAX);
        let new = self
            .limit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some((l.min(held) / 2).max(1))
            })
            .map_or(1, |old| (old.min(held) / 2).max(1));
        new as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_halve_the_limit_and_answers_grow_it_back() {
        let d = InDoubt::new(32);
        assert_eq!(d.limit(), 32, "a healthy site pipelines the whole window");
        for _ in 0..10_000 {
            d.answered();
        }
        assert_eq!(d.limit(), 32, "never above the window");
        assert_eq!(d.lost(32), 16);
        assert_eq!(d.lost(3), 1, "halved from what was in doubt");
        assert_eq!(d.lost(1), 1, "at least one");
        assert_eq!(d.lost(0), 1, "nothing in doubt, nothing learnt");
        for _ in 0..GROW_EVERY - 1 {
            assert_eq!(d.answered(), None);
        }
        assert_eq!(d.limit(), 1);
        assert_eq!(d.answered(), Some(2), "one more per GROW_EVERY answers");
        for _ in 0..GROW_EVERY * 31 {
            d.answered();
        }
        assert_eq!(d.limit(), 32, "back at the window");
    }

    #[test]
    fn a_site_that_keeps_failing_settles_low() {
        // A fault every 100 answers: the limit stays at a few messages.
        let d = InDoubt::new(32);
        let mut worst_after_start = 0;
        for round in 0..100 {
            for _ in 0..100 {
                d.answered();
            }
            if round > 5 {
                worst_after_start = worst_after_start.max(d.limit());
            }
            d.lost(d.limit());
        }
        assert!(worst_after_start <= 2, "settled at {worst_after_start}");
    }
}
