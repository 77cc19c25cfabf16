//! The one place where an outcome becomes a decision.
//!
//! Every result of a delivery attempt — a reply (code, enhanced code, text), a lost connection,
//! a timeout, peer garbage, a TLS failure, a DNS answer — goes through [`classify`], which says
//! delivered / deferred / bounced and why. The reply's code class decides first (2xx
//! delivered, 4xx deferred, 5xx bounced: a server's text never turns a temporary failure into a
//! bounce, nor a permanent one into a free retry); within the class, provider texts
//! ([`TEXT_RULES`], data) refine the reason before the generic RFC 3463 and RFC 5321 code
//! rules.

use crate::smtp::reply::Reply;
use crate::smtp::SmtpError;

/// What happens to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Accepted by the destination; the job is finished.
    Delivered,
    /// Try again later (retry set), until expiry.
    Deferred,
    /// Permanent failure; the job is finished.
    Bounced,
}

/// Why, as a small closed set used in events and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Accepted.
    Accepted,
    /// The mailbox does not exist (x.1.1, x.1.x).
    BadMailbox,
    /// The domain does not exist, has a null MX, or accepts no mail.
    BadDomain,
    /// The mailbox is full or over quota (x.2.2).
    MailboxFull,
    /// The message is too big (x.3.4, x.2.3, 552 on DATA).
    MessageTooBig,
    /// Refused for policy or content (x.7.x, Yahoo `[PH01]`).
    Policy,
    /// The source is blocked (Yahoo `[TS03]`): retrying the site is pointless for now.
    Blocked,
    /// The site throttles our traffic (Gmail 4.7.28, Yahoo `[TSS04]`, `VS98-IP0`).
    RateLimited,
    /// That one recipient is receiving too fast (Gmail `450 4.2.1`).
    RecipientRateLimited,
    /// The server ended the session on purpose (messages per connection reached): reconnect,
    /// no penalty.
    Reconnect,
    /// Authentication (SPF/DKIM/DMARC) checks failed.
    Authentication,
    /// Another 4xx.
    TempFailure,
    /// Another 5xx.
    PermFailure,
    /// The peer said something that is not SMTP, or out of sequence.
    Protocol,
    /// Connection refused, reset or closed.
    Network,
    /// A phase timed out.
    Timeout,
    /// The TLS handshake failed.
    Tls,
    /// DNS failed temporarily (SERVFAIL, timeout).
    DnsTemporary,
    /// Deferred past the job's expiry.
    Expired,
    /// The campaign was cancelled.
    Cancelled,
    /// The message cannot be written in the character set the site needs.
    Unencodable,
    /// The session could not carry it and it was not sent: a non-ASCII address to a server
    /// without SMTPUTF8, or a message over the server's SIZE (the client's own refusal).
    NotSent,
    /// The address was suppressed for the tenant after the campaign was expanded.
    Suppressed,
    /// An operator drained the job's site or campaign (`hikyaku queue drain`).
    Drained,
}

impl Reason {
    /// Stable kebab-case name, used in events and as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::BadMailbox => "bad-mailbox",
            Reason::BadDomain => "bad-domain",
            Reason::MailboxFull => "mailbox-full",
            Reason::MessageTooBig => "message-too-big",
            Reason::Policy => "policy",
            Reason::Blocked => "blocked",
            Reason::RateLimited => "rate-limited",
            Reason::RecipientRateLimited => "recipient-rate-limited",
            Reason::Reconnect => "reconnect",
            Reason::Authentication => "authentication",
            Reason::TempFailure => "temp-failure",
            Reason::PermFailure => "perm-failure",
            Reason::Protocol => "protocol",
            Reason::Network => "network",
            Reason::Timeout => "timeout",
            Reason::Tls => "tls",
            Reason::DnsTemporary => "dns-temporary",
            Reason::Expired => "expired",
            Reason::Cancelled => "cancelled",
            Reason::Unencodable => "unencodable",
            Reason::NotSent => "not-sent",
            Reason::Suppressed => "suppressed",
            Reason::Drained => "drained",
        }
    }
}

/// A decision: what to do and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to do with the job.
    pub disposition: Disposition,
    /// Why.
    pub reason: Reason,
}

const fn v(disposition: Disposition, reason: Reason) -> Verdict {
    Verdict {
        disposition,
        reason,
    }
}

/// The raw result of one delivery attempt, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The deciding reply (to MAIL, RCPT, DATA or end of data).
    Reply(Reply),
    /// The server refused the session before any transaction (greeting, EHLO, STARTTLS): a
    /// judgement on us or the server's state, not on the recipient, so never a bounce.
    SessionRefused(Reply),
    /// The connection was refused, reset or closed early.
    ConnectionLost(String),
    /// A phase timed out (the phase name).
    Timeout(&'static str),
    /// The peer sent bytes that are not an SMTP reply, or a reply out of sequence.
    Garbage(String),
    /// TLS failed after STARTTLS.
    Tls(String),
    /// NXDOMAIN, null MX (RFC 7505), or no address for the domain.
    DnsNoDomain(String),
    /// SERVFAIL or a DNS timeout.
    DnsTemporary(String),
    /// The message could not be built (campaign snapshot missing or unusable).
    Unrenderable(String),
    /// The campaign's text cannot be written in the site's character set (ISO-2022-JP): it
    /// never will be, so the job bounces.
    Unencodable(String),
    /// The recipient address is not a deliverable address (no domain, control characters…).
    InvalidRecipient(String),
}

/// Provider-specific reply texts, matched case-insensitively as substrings, before code rules.
/// From PROVIDERS.md; each is what the provider means, not what its code says. A rule applies
/// only to replies of its own class: a deferring rule to 4xx replies, a bouncing one to 5xx.
pub const TEXT_RULES: &[(&str, Verdict)] = &[
    // The SMTP client's own refusals (`SmtpClient::refused_here`): never a verdict on the
    // address, so never a suppression.
    (
        "(refused by the sender, not sent)",
        v(Disposition::Bounced, Reason::NotSent),
    ),
    (
        "max message per connection",
        v(Disposition::Deferred, Reason::Reconnect),
    ),
    ("[ts03]", v(Disposition::Deferred, Reason::Blocked)),
    ("[tss04]", v(Disposition::Deferred, Reason::RateLimited)),
    ("[ipts04]", v(Disposition::Deferred, Reason::RateLimited)),
    ("vs98-ip0", v(Disposition::Deferred, Reason::RateLimited)),
    ("[ph01]", v(Disposition::Bounced, Reason::Policy)),
    (
        "unusual rate of",
        v(Disposition::Deferred, Reason::RateLimited),
    ),
    (
        "no dmarc alignment",
        v(Disposition::Deferred, Reason::Authentication),
    ),
    (
        "does not have authentication information",
        v(Disposition::Deferred, Reason::Authentication),
    ),
    (
        "receiving mail at a rate",
        v(Disposition::Deferred, Reason::RecipientRateLimited),
    ),
];

/// Classifies one attempt.
pub fn classify(attempt: &Attempt) -> Verdict {
    use Disposition::*;
    match attempt {
        Attempt::Reply(r) => classify_reply(r),
        Attempt::SessionRefused(r) => match classify_reply(r) {
            Verdict {
                disposition: Bounced | Delivered,
                reason,
            } => v(
                Deferred,
                if reason == Reason::Accepted {
                    Reason::Protocol
                } else {
                    reason
                },
            ),
            deferred => deferred,
        },
        Attempt::ConnectionLost(_) => v(Deferred, Reason::Network),
        Attempt::Timeout(_) => v(Deferred, Reason::Timeout),
        Attempt::Garbage(_) => v(Deferred, Reason::Protocol),
        Attempt::Tls(_) => v(Deferred, Reason::Tls),
        Attempt::DnsNoDomain(_) => v(Bounced, Reason::BadDomain),
        Attempt::DnsTemporary(_) => v(Deferred, Reason::DnsTemporary),
        Attempt::Unrenderable(_) => v(Deferred, Reason::TempFailure),
        Attempt::Unencodable(_) => v(Bounced, Reason::Unencodable),
        Attempt::InvalidRecipient(_) => v(Bounced, Reason::BadMailbox),
    }
}

/// Classifies a reply by provider text, then enhanced code, then basic code.
pub fn classify_reply(reply: &Reply) -> Verdict {
    use Disposition::*;
    if reply.is_positive() {
        return v(Delivered, Reason::Accepted);
    }
    if !(400..600).contains(&reply.code) {
        // 1xx or a 3xx where a final reply was due.
        return v(Deferred, Reason::Protocol);
    }
    let transient = reply.is_transient();
    // The code's class first: text refines the reason within it.
    let class = if transient { Deferred } else { Bounced };
    let lower = reply.text.to_ascii_lowercase();
    if let Some((_, verdict)) = TEXT_RULES
        .iter()
        .find(|(pat, verdict)| verdict.disposition == class && lower.contains(pat))
    {
        return *verdict;
    }
    let fail = |reason| v(if transient { Deferred } else { Bounced }, reason);
    if let Some(e) = reply.enhanced {
        // A 4xx reply with a 5.x.x enhanced code (or the reverse) follows the basic code.
        let by_enhanced = match (e.subject, e.detail) {
            (1, 10) | (1, 2) | (4, 4) => Some(Reason::BadDomain),
            (1, _) => Some(Reason::BadMailbox),
            (2, 1) if transient => Some(Reason::RecipientRateLimited),
            (2, 2) => Some(Reason::MailboxFull),
            (2, 3) | (3, 4) => Some(Reason::MessageTooBig),
            // RFC 6531: the address needs SMTPUTF8 there. The mailbox may well exist: no
            // hard bounce (which would suppress it), a permanent failure for this message.
            (6, 7) => Some(Reason::PermFailure),
            (7, 28) => Some(Reason::RateLimited),
            (7, 26) | (7, 27) | (7, 30) | (7, 32) => Some(Reason::Authentication),
            (7, _) => Some(Reason::Policy),
            _ => None,
        };
        if let Some(reason) = by_enhanced {
            return fail(reason);
        }
    }
    match reply.code {
        421 => v(Deferred, Reason::TempFailure),
        452 => v(Deferred, Reason::MailboxFull),
        552 => v(Bounced, Reason::MessageTooBig),
        554 => v(Bounced, Reason::Policy),
        550 | 551 | 553 => v(Bounced, Reason::BadMailbox),
        400..=499 => v(Deferred, Reason::TempFailure),
        _ => v(Bounced, Reason::PermFailure),
    }
}

impl SmtpError {
    /// The attempt a session's error stands for, to classify: a refused greeting, EHLO or
    /// STARTTLS is the session's refusal; any other refusal is a reply to the message.
    pub fn to_attempt(&self) -> Attempt {
        match self {
            SmtpError::Io { .. } | SmtpError::Closed { .. } => {
                Attempt::ConnectionLost(self.to_string())
            }
            SmtpError::Timeout { phase } => Attempt::Timeout(phase),
            SmtpError::Garbage { .. } => Attempt::Garbage(self.to_string()),
            SmtpError::Refused { phase, reply } => match *phase {
                "banner" | "ehlo" | "helo" | "starttls" => Attempt::SessionRefused(reply.clone()),
                _ => Attempt::Reply(reply.clone()),
            },
            SmtpError::Tls(e) => Attempt::Tls(e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::parse_reply;
    use Disposition::*;

    #[test]
    fn the_clients_own_refusals_are_not_sent_and_session_errors_read_as_attempts() {
        let own = crate::smtp::too_big(9, 8);
        assert_eq!(classify_reply(&own).reason, Reason::NotSent);
        let refused = |phase| SmtpError::Refused {
            phase,
            reply: reply("421 4.7.0 closing\r\n"),
        };
        assert!(
            matches!(refused("ehlo").to_attempt(), Attempt::SessionRefused(r) if r.code == 421)
        );
        assert!(matches!(refused("mail").to_attempt(), Attempt::Reply(r) if r.code == 421));
        let timeout = SmtpError::Timeout { phase: "data" };
        assert!(matches!(timeout.to_attempt(), Attempt::Timeout("data")));
    }

    fn reply(raw: &str) -> Reply {
        parse_reply(raw.as_bytes())
            .expect("well-formed")
            .expect("complete")
            .0
    }

    /// The real provider replies of PROVIDERS.md, and the generic code rules.
    #[test]
    fn reply_table() {
        let table: &[(&str, Disposition, Reason)] = &[
            ("250 2.0.0 OK 1700000000 - gsmtp\r\n", Delivered, Reason::Accepted),
            (
                "421-4.7.28 [192.0.2.1] Our system has detected an unusual rate of\r\n\
                 421-4.7.28 unsolicited mail originating from your IP address. To protect our\r\n\
                 421 4.7.28 users from spam, mail sent from your IP address has been temporarily rate limited. - gsmtp\r\n",
                Deferred,
                Reason::RateLimited,
            ),
            (
                "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your SPF domain\r\n421 4.7.28 - gsmtp\r\n",
                Deferred,
                Reason::RateLimited,
            ),
            (
                "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. - gsmtp\r\n",
                Deferred,
                Reason::RecipientRateLimited,
            ),
            (
                "421-4.7.0 This message does not have authentication information or fails to pass\r\n421 4.7.0 authentication checks - gsmtp\r\n",
                Deferred,
                Reason::Authentication,
            ),
            (
                "421 4.7.32 Your email has been rate limited because there is no DMARC alignment.\r\n",
                Deferred,
                Reason::Authentication,
            ),
            (
                "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550 5.1.1 double-checking the recipient's email address for typos. - gsmtp\r\n",
                Bounced,
                Reason::BadMailbox,
            ),
            (
                "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes\r\n",
                Deferred,
                Reason::RateLimited,
            ),
            (
                "421 [IPTS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints\r\n",
                Deferred,
                Reason::RateLimited,
            ),
            (
                "421 4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.\r\n",
                Deferred,
                Reason::Blocked,
            ),
            (
                "554 Message not allowed - [PH01] Email not accepted for policy reasons.\r\n",
                Bounced,
                Reason::Policy,
            ),
            (
                "421 Max message per connection reached, closing transmission channel\r\n",
                Deferred,
                Reason::Reconnect,
            ),
            (
                "421 4.7.0 Messages from 192.0.2.1 temporarily deferred - VS98-IP0 deferred\r\n",
                Deferred,
                Reason::RateLimited,
            ),
            ("550 5.1.10 RESOLVER.ADR.RecipientNotFound\r\n", Bounced, Reason::BadDomain),
            ("556 5.1.10 null MX\r\n", Bounced, Reason::BadDomain),
            ("552 5.2.2 Mailbox full\r\n", Bounced, Reason::MailboxFull),
            ("452 4.2.2 Over quota\r\n", Deferred, Reason::MailboxFull),
            ("552 5.3.4 Message too big\r\n", Bounced, Reason::MessageTooBig),
            ("550 5.7.1 Rejected by policy\r\n", Bounced, Reason::Policy),
            ("451 4.3.0 Temporary failure, try again later\r\n", Deferred, Reason::TempFailure),
            ("421 4.7.0 Try again later, closing connection\r\n", Deferred, Reason::Policy),
            ("421 Service not available\r\n", Deferred, Reason::TempFailure),
            ("450 Mailbox busy\r\n", Deferred, Reason::TempFailure),
            ("550 No such user\r\n", Bounced, Reason::BadMailbox),
            ("554 Transaction failed\r\n", Bounced, Reason::Policy),
            ("552 Too much mail data\r\n", Bounced, Reason::MessageTooBig),
            ("503 5.5.1 Bad sequence\r\n", Bounced, Reason::PermFailure),
            (
                "553 5.6.7 non-ASCII address needs SMTPUTF8\r\n",
                Bounced,
                Reason::PermFailure,
            ),
            (
                "552 5.3.4 message of 9 bytes is over the server's SIZE limit of 8 (refused by the sender, not sent)\r\n",
                Bounced,
                Reason::NotSent,
            ),
            // The code class decides; text refines within it.
            (
                "421 4.7.0 [PH01] Email not accepted for policy reasons, try later\r\n",
                Deferred,
                Reason::Policy,
            ),
            ("451 Message not allowed - [PH01]\r\n", Deferred, Reason::TempFailure),
            (
                "550 5.7.1 Max message per connection exceeded for your IP, go away\r\n",
                Bounced,
                Reason::Policy,
            ),
            ("554 [TSS04] unexpected volume\r\n", Bounced, Reason::Policy),
            ("354 go ahead\r\n", Deferred, Reason::Protocol),
            ("199 odd\r\n", Deferred, Reason::Protocol),
        ];
        for (raw, disposition, reason) in table {
            assert_eq!(
                classify(&Attempt::Reply(reply(raw))),
                Verdict {
                    disposition: *disposition,
                    reason: *reason
                },
                "{raw}"
            );
        }
    }

    #[test]
    fn failures_without_a_reply() {
        let table = [
            (
                Attempt::ConnectionLost("reset".into()),
                Deferred,
                Reason::Network,
            ),
            (Attempt::Timeout("data"), Deferred, Reason::Timeout),
            (
                Attempt::Garbage("HELLO?".into()),
                Deferred,
                Reason::Protocol,
            ),
            (Attempt::Tls("handshake".into()), Deferred, Reason::Tls),
            (
                Attempt::DnsNoDomain("NXDOMAIN".into()),
                Bounced,
                Reason::BadDomain,
            ),
            (
                Attempt::DnsTemporary("SERVFAIL".into()),
                Deferred,
                Reason::DnsTemporary,
            ),
        ];
        for (attempt, disposition, reason) in table {
            assert_eq!(
                classify(&attempt),
                Verdict {
                    disposition,
                    reason
                },
                "{attempt:?}"
            );
        }
    }

    #[test]
    fn reason_names_are_unique() {
        let all = [
            Reason::Accepted,
            Reason::BadMailbox,
            Reason::BadDomain,
            Reason::MailboxFull,
            Reason::MessageTooBig,
            Reason::Policy,
            Reason::Blocked,
            Reason::RateLimited,
            Reason::RecipientRateLimited,
            Reason::Reconnect,
            Reason::Authentication,
            Reason::TempFailure,
            Reason::PermFailure,
            Reason::Protocol,
            Reason::Network,
            Reason::Timeout,
            Reason::Tls,
            Reason::DnsTemporary,
            Reason::Expired,
            Reason::Cancelled,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
