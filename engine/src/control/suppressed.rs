//! The last suppression check before sending: addresses suppressed for a tenant after their
//! campaign was expanded, followed from the `hk:suppressed` feed
//! ([`hikyaku_queue_schema::suppressed`]).
//!
//! The engine never reads PostgreSQL; the API publishes every suppression (unsubscribe,
//! complaint, hard bounce, operator) to the feed, and each engine reads it from its start when
//! it begins, then every second with the other control state. A connection asks
//! [`Suppressed::contains`] when it admits a job, just before the message is built: an address
//! suppressed a second or more ago is not sent to. While the set is empty the check is one
//! atomic load; otherwise a shared lock and two hash lookups.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use hikyaku_queue_schema::suppressed::{ADDRESS_FIELD, OP_FIELD, RETENTION_MS, TENANT_FIELD};
use hikyaku_queue_schema::Keys;
use hikyaku_queue_schema::Redis;
use redis::streams::{StreamReadOptions, StreamReadReply};

use crate::clock;

/// Entries read per call while catching up.
const READ_COUNT: usize = 10_000;

/// The suppressed addresses the feed holds, by tenant.
#[derive(Debug, Default)]
pub struct Suppressed {
    any: AtomicBool,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Last feed entry read (`0-0` before the first).
    last_id: String,
    /// Tenant → lower-cased address → time of the entry that suppressed it (ms).
    tenants: HashMap<String, HashMap<String, u64>>,
    /// Suppressions in feed order (time, tenant, address), to forget them when the feed does.
    order: VecDeque<(u64, String, String)>,
}

/// The address as the API keeps it: lower case (Unicode rules, as PostgreSQL's `lower`).
fn lower(address: &str) -> std::borrow::Cow<'_, str> {
    if address.is_ascii() {
        if address.bytes().any(|b| b.is_ascii_uppercase()) {
            address.to_ascii_lowercase().into()
        } else {
            address.into()
        }
    } else {
        address.to_lowercase().into()
    }
}

impl Inner {
    fn apply(&mut self, at_ms: u64, tenant: &str, address: &str, suppressed: bool) {
        let address = lower(address).into_owned();
        if suppressed {
            self.tenants
                .entry(tenant.to_owned())
                .or_default()
                .insert(address.clone(), at_ms);
            self.order.push_back((at_ms, tenant.to_owned(), address));
        } else if let Some(t) = self.tenants.get_mut(tenant) {
            t.remove(&address);
        }
    }

    fn expire(&mut self, cutoff: u64) {
        while self.order.front().is_some_and(|(at, _, _)| *at < cutoff) {
            let Some((at, tenant, address)) = self.order.pop_front() else {
                break;
            };
            // A later entry for the same address keeps it.
            if let Some(t) = self.tenants.get_mut(&tenant) {
                if t.get(&address) == Some(&at) {
                    t.remove(&address);
                }
                if t.is_empty() {
                    self.tenants.remove(&tenant);
                }
            }
        }
    }

    fn any(&self) -> bool {
        self.tenants.values().any(|t| !t.is_empty())
    }
}

impl Suppressed {
    /// Whether `address` is suppressed for `tenant` (address compared without case). Without
    /// suppressions one atomic load; with some, a shared lock and two hash lookups (no
    /// allocation for a lower-case address).
    pub fn contains(&self, tenant: &str, address: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let inner = self.read();
        inner
            .tenants
            .get(tenant)
            .is_some_and(|t| t.contains_key(lower(address).as_ref()))
    }

    /// Applies one feed entry written at `at_ms`.
    pub fn apply(&self, at_ms: u64, tenant: &str, address: &str, suppressed: bool) {
        let mut inner = self.write();
        inner.apply(at_ms, tenant, address, suppressed);
        self.any.store(inner.any(), Ordering::Release);
    }

    /// Forgets suppressions older than the feed keeps (jobs that old have expired).
    pub fn expire(&self, now_ms: u64) {
        let mut inner = self.write();
        inner.expire(now_ms.saturating_sub(RETENTION_MS));
        self.any.store(inner.any(), Ordering::Release);
    }

    /// Reads the feed from where the last call stopped to its end. Returns the entries read.
    pub async fn refresh(&self, con: &mut Redis) -> redis::RedisResult<usize> {
        let mut read = 0;
        loop {
            let from = {
                let inner = self.read();
                if inner.last_id.is_empty() {
                    "0-0".to_owned()
                } else {
                    inner.last_id.clone()
                }
            };
            let reply: Option<StreamReadReply> = redis::AsyncCommands::xread_options(
                con,
                &[Keys::suppressed()],
                &[from.as_str()],
                &StreamReadOptions::default().count(READ_COUNT),
            )
            .await?;
            let ids = reply
                .and_then(|r| r.keys.into_iter().next())
                .map(|k| k.ids)
                .unwrap_or_default();
            let n = ids.len();
            // One write lock per batch, not per entry.
            let mut inner = self.write();
            for entry in ids {
                let at_ms = hikyaku_queue_schema::keys::stream_id_ms(&entry.id).unwrap_or(0);
                let field = |name: &str| entry.get::<String>(name);
                if let (Some(t), Some(a), Some(op)) =
                    (field(TENANT_FIELD), field(ADDRESS_FIELD), field(OP_FIELD))
                {
                    inner.apply(at_ms, &t, &a, op == "add");
                }
                inner.last_id = entry.id;
            }
            self.any.store(inner.any(), Ordering::Release);
            drop(inner);
            read += n;
            if n < READ_COUNT {
                break;
            }
        }
        self.expire(clock::now_ms());
        Ok(read)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_apply_per_tenant_release_and_expire() {
        let s = Suppressed::default();
        assert!(!s.contains("1", "a@x.test"));
        s.apply(1_000, "1", "A@X.test", true);
        assert!(s.contains("1", "a@x.TEST"), "case does not matter");
        assert!(!s.contains("2", "a@x.test"), "another tenant's list");
        s.apply(2_000, "1", "a@x.test", false);
        assert!(!s.contains("1", "a@x.test"), "released");
        s.apply(3_000, "1", "b@x.test", true);
        s.apply(3_500, "1", "b@x.test", true);
        s.apply(4_000 + RETENTION_MS, "1", "c@x.test", true);
        s.expire(3_200 + RETENTION_MS);
        assert!(s.contains("1", "b@x.test"), "its later entry keeps it");
        s.expire(3_600 + RETENTION_MS);
        assert!(!s.contains("1", "b@x.test"), "forgotten with the feed");
        assert!(s.contains("1", "c@x.test"));
        s.apply(5_000 + RETENTION_MS, "1", "Ärger@X.jp", true);
        assert!(
            s.contains("1", "äRGER@x.jp"),
            "Unicode case, as the API's lower()"
        );
    }
}
