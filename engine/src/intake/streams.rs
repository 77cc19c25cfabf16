//! Reading Redis stream replies (XREADGROUP, XAUTOCLAIM) straight from `redis::Value`.
//!
//! The `redis` crate's typed stream replies build a map per entry; this hot path only needs the
//! entry id and one field, so it walks the reply itself.

use std::sync::Arc;

use hikyaku_queue_schema::keys::JOB_FIELD;
use redis::Value;

/// One stream entry: its id and the job bytes, or `None` if the entry was deleted while
/// pending (Redis returns a nil body then).
pub type Entry = (Arc<str>, Option<Vec<u8>>);

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn entry(v: Value) -> Option<Entry> {
    let mut parts = items(v).into_iter();
    let id: Arc<str> = text(&parts.next()?)?.into();
    let fields = parts.next().map(items).unwrap_or_default();
    if fields.is_empty() {
        return Some((id, None));
    }
    let mut it = fields.into_iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        if text(&k) == Some(JOB_FIELD) {
            if let Value::BulkString(b) = val {
                return Some((id, Some(b)));
            }
        }
    }
    Some((id, None))
}

/// Entries of an XREADGROUP reply on one stream (nil → none).
pub fn parse_read(v: Value) -> Vec<Entry> {
    let mut out = Vec::new();
    // RESP2: [[key, [entries]]]; RESP3: {key: [entries]}.
    let streams = items(v);
    let mut it = streams.into_iter();
    while let Some(first) = it.next() {
        let (_key, entries) = match first {
            Value::Array(_) => {
                let mut kv = items(first).into_iter();
                (kv.next(), kv.next())
            }
            other => (Some(other), it.next()),
        };
        for e in entries.map(items).unwrap_or_default() {
            if let Some(e) = entry(e) {
                out.push(e);
            }
        }
    }
    out
}

/// Entries of an XCLAIM (or XRANGE) reply.
pub fn parse_entries(v: Value) -> Vec<Entry> {
    items(v).into_iter().filter_map(entry).collect()
}

/// An XAUTOCLAIM reply: next cursor, claimed entries, ids of entries deleted while pending.
pub fn parse_autoclaim(v: Value) -> (String, Vec<Entry>, Vec<String>) {
    let mut it = items(v).into_iter();
    let cursor = it
        .next()
        .as_ref()
        .and_then(text)
        .unwrap_or("0-0")
        .to_owned();
    let entries = it
        .next()
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(entry)
        .collect();
    let deleted = it
        .next()
        .map(items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| text(v).map(str::to_owned))
        .collect();
    (cursor, entries, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_resp2_and_resp3_shapes() {
        let e1 = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("j"), bulk("job1")]),
        ]);
        let e2 = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("hk:{s0}:ready"),
            Value::Array(vec![e1.clone(), e2.clone()]),
        ])]);
        let got = parse_read(resp2);
        assert_eq!(got.len(), 2);
        assert_eq!(&*got[0].0, "1-0");
        assert_eq!(got[0].1.as_deref(), Some(&b"job1"[..]));
        assert_eq!(got[1].1, None);
        let resp3 = Value::Map(vec![(bulk("hk:{s0}:ready"), Value::Array(vec![e1]))]);
        assert_eq!(parse_read(resp3).len(), 1);
        assert!(parse_read(Value::Nil).is_empty());
        assert!(parse_read(Value::Int(3)).is_empty());
    }

    #[test]
    fn reads_autoclaim() {
        let v = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("j"), bulk("x")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, entries, deleted) = parse_autoclaim(v);
        assert_eq!(cursor, "5-0");
        assert_eq!(entries.len(), 1);
        assert_eq!(deleted, vec!["4-0".to_owned()]);
    }
}
