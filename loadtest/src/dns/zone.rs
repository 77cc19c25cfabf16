//! Test zones: a line-oriented text format and its in-memory form.
//!
//! One record per line; `#` starts a comment; blank lines are ignored; names are
//! case-insensitive and the trailing dot is optional:
//!
//! ```text
//! gmail.test            MX 10 mx1.google.test
//! mx1.google.test       A 127.0.0.2
//! mx1.google.test       AAAA ::1
//! nullmx.test           MX 0 .
//! servfail.test         SERVFAIL
//! slow.test             TIMEOUT        # never answer queries for this name
//! plain.test  ttl=5     A 127.0.0.3    # optional ttl=N after the name; default 300
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record};

/// TTL of records without `ttl=N`.
pub const DEFAULT_TTL: u32 = 300;

/// A parse error, naming the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// The owner name or an MX target is not a valid domain name.
    #[error("zone line {line}: invalid domain name {name:?}: {reason}")]
    BadName {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The line ends before a required field.
    #[error("zone line {line}: missing {what}")]
    Missing {
        /// 1-based line number.
        line: usize,
        /// The field that is missing.
        what: &'static str,
    },
    /// The record type is not one of the supported ones.
    #[error("zone line {line}: unknown record type {found:?} (expected MX, A, AAAA, SERVFAIL or TIMEOUT)")]
    UnknownType {
        /// 1-based line number.
        line: usize,
        /// The type as written.
        found: String,
    },
    /// A field has the right place but an invalid value.
    #[error("zone line {line}: invalid {what} {found:?}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// Which field.
        what: &'static str,
        /// The value as written.
        found: String,
    },
    /// Text follows a complete record.
    #[error("zone line {line}: unexpected {found:?} after the record")]
    Trailing {
        /// 1-based line number.
        line: usize,
        /// The first extra token.
        found: String,
    },
}

impl ZoneError {
    /// The 1-based line number the error is on.
    pub fn line(&self) -> usize {
        match self {
            ZoneError::BadName { line, .. }
            | ZoneError::Missing { line, .. }
            | ZoneError::UnknownType { line, .. }
            | ZoneError::BadValue { line, .. }
            | ZoneError::Trailing { line, .. } => *line,
        }
    }
}

/// A deliberate failure attached to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer SERVFAIL for every type.
    ServFail,
    /// Never answer, so the resolver times out.
    Timeout,
}

/// What the zone knows about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name is not in the zone (NXDOMAIN).
    Missing,
    /// The name is marked to fail.
    Fault(Fault),
    /// The name's records (possibly none of the asked type).
    Records(&'a [Record]),
}

/// Everything the zone holds for one owner name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    /// The records, in file order.
    records: Vec<Record>,
    /// A fault overriding the records, if any.
    fault: Option<Fault>,
}

/// An in-memory zone: records and faults by owner name (case-insensitive, fully qualified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// Owner name → its data. hickory's `Name` hashes and compares case-insensitively.
    nodes: HashMap<Name, Node>,
}

impl Zone {
    /// Parses the zone-file format described in the [module docs](self).
    pub fn parse(text: &str) -> Result<Zone, ZoneError> {
        let mut zone = Zone::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default();
            let mut tokens = content.split_whitespace().peekable();
            let Some(owner) = tokens.next() else {
                continue;
            };
            let owner = parse_name(owner, line)?;
            let mut ttl = DEFAULT_TTL;
            if let Some(value) = tokens.peek().and_then(|t| strip_prefix_ci(t, "ttl=")) {
                ttl = value.parse().map_err(|_| ZoneError::BadValue {
                    line,
                    what: "ttl",
                    found: value.to_owned(),
                })?;
                tokens.next();
            }
            let kind = tokens.next().ok_or(ZoneError::Missing {
                line,
                what: "record type",
            })?;
            let node = zone.nodes.entry(owner.clone()).or_default();
            let rdata = match kind.to_ascii_uppercase().as_str() {
                "SERVFAIL" => {
                    node.fault = Some(Fault::ServFail);
                    None
                }
                "TIMEOUT" => {
                    node.fault = Some(Fault::Timeout);
                    None
                }
                "A" => Some(RData::A(A(parse_value::<Ipv4Addr>(
                    tokens.next(),
                    "IPv4 address",
                    line,
                )?))),
                "AAAA" => Some(RData::AAAA(AAAA(parse_value::<Ipv6Addr>(
                    tokens.next(),
                    "IPv6 address",
                    line,
                )?))),
                "MX" => {
                    let preference = parse_value::<u16>(tokens.next(), "MX preference", line)?;
                    let exchange = tokens.next().ok_or(ZoneError::Missing {
                        line,
                        what: "MX exchange",
                    })?;
                    Some(RData::MX(MX::new(preference, parse_name(exchange, line)?)))
                }
                _ => {
                    return Err(ZoneError::UnknownType {
                        line,
                        found: kind.to_owned(),
                    })
                }
            };
            if let Some(extra) = tokens.next() {
                return Err(ZoneError::Trailing {
                    line,
                    found: extra.to_owned(),
                });
            }
            if let Some(rdata) = rdata {
                node.records.push(Record::from_rdata(owner, ttl, rdata));
            }
        }
        Ok(zone)
    }

    /// What the zone says about `name` (compared case-insensitively).
    pub fn lookup(&self, name: &Name) -> Lookup<'_> {
        let found = if name.is_fqdn() {
            self.nodes.get(name)
        } else {
            let mut fqdn = name.clone();
            fqdn.set_fqdn(true);
            self.nodes.get(&fqdn)
        };
        match found {
            None => Lookup::Missing,
            Some(Node {
                fault: Some(fault), ..
            }) => Lookup::Fault(*fault),
            Some(node) => Lookup::Records(&node.records),
        }
    }

    /// Number of owner names in the zone.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the zone has no names at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Zone::parse(s)
    }
}

/// Parses a domain name, making it fully qualified (`.` is the root).
fn parse_name(text: &str, line: usize) -> Result<Name, ZoneError> {
    let mut name = Name::from_ascii(text).map_err(|e| ZoneError::BadName {
        line,
        name: text.to_owned(),
        reason: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses a required field.
fn parse_value<T: FromStr>(
    token: Option<&str>,
    what: &'static str,
    line: usize,
) -> Result<T, ZoneError> {
    let token = token.ok_or(ZoneError::Missing { line, what })?;
    token.parse().map_err(|_| ZoneError::BadValue {
        line,
        what,
        found: token.to_owned(),
    })
}

/// `text` without `prefix`, compared case-insensitively.
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::rr::RecordType;

    const ZONE: &str = "\
# test zone
gmail.test            MX 10 mx1.google.test
GMAIL.test.           MX 20 mx2.google.test
mx1.google.test       A 127.0.0.2
mx1.google.test       AAAA ::1

nullmx.test           MX 0 .
servfail.test         SERVFAIL
slow.test             TIMEOUT        # never answer
plain.test  ttl=5     A 127.0.0.3
";

    #[test]
    fn parses_every_record_kind() {
        let zone = Zone::parse(ZONE).unwrap();
        let gmail = Name::from_ascii("Gmail.Test.").unwrap();
        let Lookup::Records(records) = zone.lookup(&gmail) else {
            panic!("gmail.test missing");
        };
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.record_type() == RecordType::MX));
        let Lookup::Records(null) = zone.lookup(&Name::from_ascii("nullmx.test").unwrap()) else {
            panic!("nullmx.test missing");
        };
        let RData::MX(mx) = null[0].data() else {
            panic!("not an MX");
        };
        assert_eq!(mx.preference(), 0);
        assert!(mx.exchange().is_root());
        let Lookup::Records(plain) = zone.lookup(&Name::from_ascii("plain.test").unwrap()) else {
            panic!("plain.test missing");
        };
        assert_eq!(plain[0].ttl(), 5);
        assert_eq!(
            zone.lookup(&Name::from_ascii("servfail.test").unwrap()),
            Lookup::Fault(Fault::ServFail)
        );
        assert_eq!(
            zone.lookup(&Name::from_ascii("slow.test").unwrap()),
            Lookup::Fault(Fault::Timeout)
        );
        assert_eq!(
            zone.lookup(&Name::from_ascii("nope.test").unwrap()),
            Lookup::Missing
        );
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("a.test A 127.0.0.1\nb.test A 300.1.1.1\n", 2, "IPv4"),
            ("\n\n# c\nx.test\n", 4, "record type"),
            ("x.test CNAME y.test", 1, "CNAME"),
            ("x.test MX ten y.test", 1, "MX preference"),
            ("x.test MX 10", 1, "MX exchange"),
            ("x.test ttl=abc A 127.0.0.1", 1, "ttl"),
            ("x.test A 127.0.0.1 extra", 1, "extra"),
            ("x..test A 127.0.0.1", 1, "x..test"),
        ];
        for (text, line, mentions) in cases {
            let err = Zone::parse(text).unwrap_err();
            assert_eq!(err.line(), line, "{text:?}: {err}");
            assert!(err.to_string().contains(mentions), "{text:?}: {err}");
        }
    }
}
