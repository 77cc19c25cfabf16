//! Reading a returned message: a DSN (RFC 3464, `multipart/report; report-type=delivery-status`)
//! or an ARF complaint (RFC 5965, `report-type=feedback-report`), MIME-parsed by mail-parser.
//! Whatever cannot be read as either is [`Report::Unrecognised`] — classified, never an error.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// What a returned message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification, one entry per recipient it reports on.
    Dsn(Vec<DsnRecipient>),
    /// A complaint (abuse report) about one of our messages.
    Complaint(Complaint),
    /// Neither (an auto-reply, a human answer, garbage).
    Unrecognised(&'static str),
}

/// One recipient block of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// `Final-Recipient` address, lowercased, if given.
    pub recipient: Option<String>,
    /// `Original-Recipient` address (the one we sent to, before forwarding), if given.
    pub original: Option<String>,
    /// `Action`: failed, delayed, delivered, relayed, expanded (lowercased).
    pub action: String,
    /// `Status`, an RFC 3463 code such as `5.1.1`.
    pub status: String,
    /// `Diagnostic-Code` text, if any.
    pub diagnostic: String,
}

impl DsnRecipient {
    /// A permanent failure (the address will not take mail).
    pub fn is_hard(&self) -> bool {
        self.action == "failed" && self.status.starts_with('5')
    }

    /// A transient failure or delay.
    pub fn is_soft(&self) -> bool {
        self.action == "delayed" || (self.action == "failed" && self.status.starts_with('4'))
    }
}

/// An ARF report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `Feedback-Type` (abuse, fraud, …), lowercased.
    pub feedback_type: String,
    /// `Original-Rcpt-To`, lowercased, if given.
    pub recipient: Option<String>,
    /// Message-ID of the reported message (without angle brackets), if it came back.
    pub message_id: Option<String>,
}

/// Parses a returned message.
pub fn parse(raw: &[u8]) -> Report {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Report::Unrecognised("not a MIME message");
    };
    let is_report = msg.content_type().is_some_and(|ct| {
        ct.c_type.eq_ignore_ascii_case("multipart")
            && ct
                .c_subtype
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    if !is_report {
        return Report::Unrecognised("not a multipart/report");
    }
    let mut dsn = None;
    let mut feedback = None;
    let mut returned_id = None;
    for part in &msg.parts {
        if part.is_content_type("message", "delivery-status") {
            dsn = Some(dsn_recipients(part_text(part)));
        } else if part.is_content_type("message", "feedback-report") {
            feedback = Some(fields(part_text(part)));
        } else if part.is_content_type("message", "rfc822")
            || part.is_content_type("text", "rfc822-headers")
        {
            returned_id = match &part.body {
                PartType::Message(m) => m.message_id().map(str::to_owned),
                _ => header_in(part_text(part), "message-id"),
            }
            .map(|id| id.trim().trim_matches(['<', '>']).to_owned());
        }
    }
    if let Some(f) = feedback {
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        return Report::Complaint(Complaint {
            feedback_type: get("feedback-type")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            recipient: get("original-rcpt-to").map(|a| address(&a)),
            message_id: returned_id,
        });
    }
    match dsn {
        Some(r) if !r.is_empty() => Report::Dsn(r),
        Some(_) => Report::Unrecognised("delivery-status without recipients"),
        None => Report::Unrecognised(
            "multipart/report without a delivery-status or feedback-report part",
        ),
    }
}

fn part_text<'a>(part: &'a mail_parser::MessagePart<'_>) -> &'a [u8] {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
        PartType::Binary(b) | PartType::InlineBinary(b) => b,
        PartType::Message(m) => &m.raw_message,
        PartType::Multipart(_) => &[],
    }
}

/// Header-style `Name: value` fields (unfolded, names lowercased), in blocks separated by blank
/// lines.
fn blocks(text: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(text);
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if out.last().is_some_and(|b| !b.is_empty()) {
                out.push(Vec::new());
            }
            continue;
        }
        let block = out.last_mut().expect("never empty");
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = block.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            block.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

fn fields(text: &[u8]) -> Vec<(String, String)> {
    blocks(text).into_iter().flatten().collect()
}

fn header_in(text: &[u8], name: &str) -> Option<String> {
    blocks(text)
        .into_iter()
        .next()?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// `rfc822; Name@Example` or `<a@b>` → `name@example`.
fn address(v: &str) -> String {
    let v = v.split_once(';').map_or(v, |(_, a)| a);
    v.trim().trim_matches(['<', '>']).to_ascii_lowercase()
}

fn dsn_recipients(text: &[u8]) -> Vec<DsnRecipient> {
    blocks(text)
        .into_iter()
        .filter_map(|b| {
            let get = |k: &str| b.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let action = get("action")?.to_ascii_lowercase();
            Some(DsnRecipient {
                recipient: get("final-recipient").map(|a| address(&a)),
                original: get("original-recipient").map(|a| address(&a)),
                action,
                status: get("status").unwrap_or_default(),
                diagnostic: get("diagnostic-code").unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
