//! The daily error digest: a day's deferrals, bounces and expiries grouped by normalized reply,
//! with counts, sites, MX hosts and first/last seen, most frequent first — so that a morning
//! look shows "Yahoo said TSS04 41,000 times through 3 MX hosts" instead of 41,000 lines.
//!
//! Normalization is hand-written: no crate fingerprints SMTP replies. The reply code and the
//! enhanced code at the start stay as they are; then addresses become `<addr>`, IPv4/IPv6
//! addresses `<ip>`, long tokens with digits (queue and session ids) `<id>`, numbers `#`, and
//! runs of three or more digits inside words `#` (host numbers like `mta1234`). Short codes such
//! as `[TSS04]` or `VS98-IP0` survive: they are what tells one provider's reply from another's.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use regex::Regex;

use super::{progress, AdminError, Ctx};
use crate::text::{csv_field, terminal};

static ADDRESS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"[^\s<>\[\]()"',;:]+@[A-Za-z0-9][A-Za-z0-9.-]*"#).ok());
static IPV4: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b\d{1,3}(?:\.\d{1,3}){3}\b").ok());
static IPV6: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}").ok());
static PREFIX: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\d{3}\b").ok());
static ENHANCED: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b[245]\.\d{1,3}\.\d{1,3}\b").ok());

/// Writes one word (ASCII letters, digits, `_`) with its variable parts replaced.
fn push_word(word: &str, out: &mut String) {
    let digits = word.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 {
        out.push_str(word);
    } else if digits == word.len() {
        out.push('#');
    } else if word.len() >= 12 || (word.len() >= 8 && word.bytes().all(|b| b.is_ascii_hexdigit())) {
        out.push_str("<id>");
    } else {
        let b = word.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i - start >= 3 {
                    out.push('#');
                } else {
                    out.push_str(&word[start..i]);
                }
            } else {
                out.push(char::from(b[i]));
                i += 1;
            }
        }
    }
}

/// A failure's pattern: the reply code (when there is one) and the normalized text.
pub fn pattern(code: i32, detail: &str) -> String {
    let text = normalize(detail);
    let prefix = code.to_string();
    if code <= 0 || text.starts_with(&prefix) {
        text
    } else {
        format!("{prefix} {text}")
    }
}

/// The reply with its variable parts replaced (see the module docs).
pub fn normalize(text: &str) -> String {
    let text = text.trim();
    let (keep, rest) = match PREFIX.as_ref().and_then(|re| re.find(text)) {
        Some(m) => text.split_at(m.end()),
        None => ("", text),
    };
    let mut rest = rest.to_owned();
    if let Some(re) = ADDRESS.as_ref() {
        rest = re.replace_all(&rest, "<addr>").into_owned();
    }
    if let Some(re) = IPV6.as_ref() {
        rest = re
            .replace_all(&rest, |c: &regex::Captures<'_>| {
                let m = &c[0];
                // Real IPv6 only: `::` or five or more colons (a time like 12:30:45 stays).
                if m.contains("::") || m.matches(':').count() >= 5 {
                    "<ip>".to_owned()
                } else {
                    m.to_owned()
                }
            })
            .into_owned();
    }
    if let Some(re) = IPV4.as_ref() {
        rest = re.replace_all(&rest, "<ip>").into_owned();
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(keep);
    // Enhanced status codes (RFC 3463) anywhere in the text are kept whole.
    let codes: Vec<(usize, usize)> = ENHANCED
        .as_ref()
        .map(|re| re.find_iter(&rest).map(|m| (m.start(), m.end())).collect())
        .unwrap_or_default();
    let mut word = String::new();
    let mut i = 0;
    while let Some(ch) = rest[i..].chars().next() {
        if let Some(&(_, end)) = codes.iter().find(|(start, _)| *start == i) {
            push_word(&word, &mut out);
            word.clear();
            out.push_str(&rest[i..end]);
            i = end;
            continue;
        }
        // Placeholders already written pass through whole.
        if let Some(tag) = ["<addr>", "<ip>"]
            .iter()
            .find(|t| rest[i..].starts_with(**t))
        {
            push_word(&word, &mut out);
            word.clear();
            out.push_str(tag);
            i += tag.len();
            continue;
        }
        i += ch.len_utf8();
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
            continue;
        }
        push_word(&word, &mut out);
        word.clear();
        out.push(ch);
    }
    push_word(&word, &mut out);
    // Whitespace runs (multi-line replies joined) collapse to one space.
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One group of similar failures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DigestRow {
    /// `deferred`, `bounced` or `expired`.
    pub kind: String,
    /// The normalized reply.
    pub pattern: String,
    /// How many.
    pub count: i64,
    /// By site.
    pub sites: BTreeMap<String, i64>,
    /// By MX host.
    pub mx_hosts: BTreeMap<String, i64>,
    /// First seen.
    pub first_seen: DateTime<Utc>,
    /// Last seen.
    pub last_seen: DateTime<Utc>,
    /// One reply as it came.
    pub example: String,
}

/// The digest of `[from, to)`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Digest {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Failures counted.
    pub total: i64,
    /// Groups, most frequent first.
    pub rows: Vec<DigestRow>,
}

#[derive(Debug, sqlx::FromRow)]
struct Raw {
    kind: String,
    code: i32,
    detail: String,
    site: String,
    mx: String,
    n: i64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// Groups the failures recorded in `[from, to)`.
pub async fn build(
    ctx: &Ctx,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Digest, AdminError> {
    if from >= to {
        return Err(AdminError::Invalid(
            "the period is empty (from >= to)".into(),
        ));
    }
    let pb = progress::bar(None, "reply groups read");
    // Exact duplicates are grouped by PostgreSQL; normalization merges the rest here.
    let mut stream = sqlx::query_as::<_, Raw>(
        "SELECT 'deferred' AS kind, code, detail, site, mx, count(*) AS n, min(at) AS first, max(at) AS last \
         FROM deferral_events WHERE at >= $1 AND at < $2 GROUP BY code, detail, site, mx \
         UNION ALL \
         SELECT status, code, detail, site, mx, count(*), min(at), max(at) FROM delivery_events \
         WHERE at >= $1 AND at < $2 AND status IN ('bounced', 'expired') \
         GROUP BY status, code, detail, site, mx",
    )
    .bind(from)
    .bind(to)
    .fetch(&ctx.db);
    let mut groups: HashMap<(String, String), DigestRow> = HashMap::new();
    let mut total = 0;
    while let Some(r) = stream.try_next().await? {
        pb.inc(1);
        total += r.n;
        let pattern = pattern(r.code, &r.detail);
        let row = groups
            .entry((r.kind.clone(), pattern.clone()))
            .or_insert_with(|| DigestRow {
                kind: r.kind.clone(),
                pattern,
                count: 0,
                sites: BTreeMap::new(),
                mx_hosts: BTreeMap::new(),
                first_seen: r.first,
                last_seen: r.last,
                example: r.detail.clone(),
            });
        row.count += r.n;
        *row.sites.entry(r.site).or_insert(0) += r.n;
        let mx = if r.mx.is_empty() {
            "(none)".to_owned()
        } else {
            r.mx
        };
        *row.mx_hosts.entry(mx).or_insert(0) += r.n;
        row.first_seen = row.first_seen.min(r.first);
        row.last_seen = row.last_seen.max(r.last);
    }
    pb.finish_and_clear();
    let mut rows: Vec<DigestRow> = groups.into_values().collect();
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    Ok(Digest {
        from,
        to,
        total,
        rows,
    })
}

fn counts(m: &BTreeMap<String, i64>) -> String {
    let mut v: Vec<(&String, &i64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Digest {
    /// Human-readable text. Replies, sites and MX hosts come from remote servers: printed
    /// without their escape sequences and control characters ([`terminal`]).
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "hikyaku error digest {} .. {}: {} failures in {} groups\n",
            self.from.to_rfc3339(),
            self.to.to_rfc3339(),
            self.total,
            self.rows.len()
        );
        for (i, r) in self.rows.iter().enumerate() {
            out.push_str(&format!(
                "\n{:>3}. {:>9}  {}  {}\n     sites: {}\n     mx:    {}\n     seen:  {} .. {}\n",
                i + 1,
                r.count,
                r.kind,
                terminal(&r.pattern),
                terminal(&counts(&r.sites)),
                terminal(&counts(&r.mx_hosts)),
                r.first_seen.format("%Y-%m-%d %H:%M:%S"),
                r.last_seen.format("%Y-%m-%d %H:%M:%S"),
            ));
        }
        out
    }

    /// CSV: `count,kind,pattern,sites,mx_hosts,first_seen,last_seen,example`, every cell
    /// through [`csv_field`] (a reply that looks like a formula stays text).
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("count,kind,pattern,sites,mx_hosts,first_seen,last_seen,example\n");
        for r in &self.rows {
            let line = [
                r.count.to_string(),
                r.kind.clone(),
                r.pattern.clone(),
                counts(&r.sites),
                counts(&r.mx_hosts),
                r.first_seen.to_rfc3339(),
                r.last_seen.to_rfc3339(),
                r.example.clone(),
            ]
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Posts `body` (JSON) to an `http://` webhook; fails unless it answers 2xx within 10 s.
///
/// Plain HTTP/1.1 written by hand: one POST does not justify an HTTP client stack. For an
/// `https://` endpoint, post through a local relay (or pipe `--format json` to `curl`).
pub async fn post_webhook(url: &str, body: &str) -> Result<(), AdminError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        AdminError::Invalid(format!(
            "--webhook {url:?}: only http:// URLs (post https through a local relay)"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(AdminError::Invalid(format!("--webhook {url:?}: no host")));
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: hikyaku-digest\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut reply = Vec::new();
        s.take(64 * 1024).read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| AdminError::Other(format!("webhook {url}: no answer in 10 s")))??;
    let status_line = String::from_utf8_lossy(&reply);
    let status_line = status_line.lines().next().unwrap_or("");
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') && code.len() == 3 {
        Ok(())
    } else {
        Err(AdminError::Other(format!(
            "webhook {url} answered {status_line:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_are_replaced_and_provider_codes_kept() {
        let cases = [
            (
                "421 4.7.0 [TSS04] Messages from 10.1.2.3 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
                "421 4.7.0 [TSS04] Messages from <ip> temporarily deferred due to unexpected volume or user complaints - <ip>; see https://postmaster.yahooinc.com/error-codes",
            ),
            (
                "421-4.7.28 [127.0.0.1] Our system\n421-4.7.28 from your IP",
                "421-4.7.28 [<ip>] Our system #-4.7.28 from your IP",
            ),
            (
                "421 4.7.0 Messages from 192.0.2.7 temporarily deferred - VS98-IP0 deferred",
                "421 4.7.0 Messages from <ip> temporarily deferred - VS98-IP0 deferred",
            ),
            (
                "550 5.1.1 <taro.yamada123@docomo.ne.jp>: Recipient address rejected: User unknown in relay recipient table",
                "550 5.1.1 <<addr>>: Recipient address rejected: User unknown in relay recipient table",
            ),
            (
                "421 4.7.28 [2001:db8::1] Our system has detected - gsmtp d9443c01a7336-2a3b0cb0a6asm123",
                "421 4.7.28 [<ip>] Our system has detected - gsmtp <id>-<id>",
            ),
            (
                "451 4.3.0 mta1234.mail.bf1.yahoo.com queue 5F3A2B1C9D: try again in 30 seconds at 12:30:45",
                "451 4.3.0 mta#.mail.bf1.yahoo.com queue <id>: try again in # seconds at #:#:#",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), want, "{raw}");
        }
        assert_eq!(
            pattern(421, "4.7.0 [TSS04] Messages from 10.0.0.1 deferred"),
            "421 4.7.0 [TSS04] Messages from <ip> deferred"
        );
        assert_eq!(pattern(421, "421 4.7.0 busy"), "421 4.7.0 busy");
        assert_eq!(
            pattern(0, "connection reset (os error 104)"),
            "connection reset (os error #)"
        );
        // Different numbers, same pattern.
        assert_eq!(
            normalize("expired after 3 attempts; last: 421 too busy"),
            normalize("expired after 12 attempts; last: 421 too busy")
        );
    }
}
