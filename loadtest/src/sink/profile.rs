//! Provider profiles: which reply texts a listener speaks and which limits it enforces.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which provider's reply texts a listener imitates.
///
/// The engine's bounce classifier and adaptive throttling key on these exact texts, so the
/// sink must reproduce them byte for byte (see `shared/PROVIDERS.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// A generic, well-behaved MTA.
    Plain,
    /// Gmail / Google Workspace (`421-4.7.28 … - gsmtp`).
    Google,
    /// Yahoo / AOL (`[TSS04]` deferrals).
    Yahoo,
    /// Yahoo! JAPAN (`VS98-IP0 deferred`).
    YahooJp,
    /// NTT docomo.
    Docomo,
    /// au / KDDI, which answers overload with a TCP reset instead of a reply.
    Au,
    /// SoftBank.
    Softbank,
}

impl ProviderKind {
    /// Every kind, in declaration order; handy for CLIs listing the choices.
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::Plain,
        ProviderKind::Google,
        ProviderKind::Yahoo,
        ProviderKind::YahooJp,
        ProviderKind::Docomo,
        ProviderKind::Au,
        ProviderKind::Softbank,
    ];

    /// The canonical lower-case name, the inverse of [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Plain => "plain",
            ProviderKind::Google => "google",
            ProviderKind::Yahoo => "yahoo",
            ProviderKind::YahooJp => "yahoo-jp",
            ProviderKind::Docomo => "docomo",
            ProviderKind::Au => "au",
            ProviderKind::Softbank => "softbank",
        }
    }

    /// Whether this provider answers overload by resetting the TCP connection (au / KDDI)
    /// rather than with a 421 reply.
    pub fn resets_when_overloaded(self) -> bool {
        matches!(self, ProviderKind::Au)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown provider kind {0:?} (expected plain, google, yahoo, yahoo-jp, docomo, au or softbank)"
)]
pub struct UnknownProviderKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProviderKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProviderKind(s.to_owned()))
    }
}

/// How one listener behaves: its reply texts and the limits it enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Statistics are kept per profile name, so listeners sharing a name share counters.
    pub name: String,
    /// Which provider's reply texts to use.
    pub kind: ProviderKind,
    /// Accepted messages per second before MAIL FROM gets the provider's throttle reply;
    /// 0 means unlimited.
    pub max_rate: u32,
    /// Concurrent connections for this profile before new ones are refused; 0 means unlimited.
    pub max_conns: u32,
    /// Messages per connection before the next MAIL gets `421 Max message per connection
    /// reached…` and the connection closes; 0 means unlimited.
    pub max_msgs_per_conn: u32,
    /// Delay before the reply to end-of-DATA or `BDAT … LAST` (not to other chunks), to
    /// emulate a slow receiver.
    pub latency: Duration,
    /// Accept TCP but never send a byte, to emulate a server that never answers.
    pub silent: bool,
    /// RFC 3030 CHUNKING: EHLO advertises `CHUNKING` and `BDAT <size> [LAST]` is accepted
    /// alongside DATA. On by default ([`Profile::plain`], [`Profile::provider`]). Set it to
    /// `false` to emulate a DATA-only server: EHLO then omits CHUNKING and BDAT is an unknown
    /// verb (`500 5.5.2 Syntax error`, its content read as command lines), so senders must
    /// fall back to `DATA`. Per listener, so one sink can emulate both kinds of peer.
    pub chunking: bool,
    /// Connections, per mille, cut without a reply in the middle of one message's content (a
    /// random one of the connection's first eight): a server or network failing mid-DATA. The
    /// message in flight and any pipelined behind it are not accepted.
    pub cut_per_mille: u32,
    /// Messages, per mille, whose end-of-content reply is a line that is not SMTP (the message
    /// is not accepted): a broken or hostile peer.
    pub garbage_per_mille: u32,
}

impl Profile {
    /// A well-behaved, unlimited profile with generic reply texts.
    pub fn plain(name: &str) -> Self {
        Profile {
            name: name.to_owned(),
            kind: ProviderKind::Plain,
            max_rate: 0,
            max_conns: 0,
            max_msgs_per_conn: 0,
            latency: Duration::ZERO,
            silent: false,
            chunking: true,
            cut_per_mille: 0,
            garbage_per_mille: 0,
        }
    }

    /// An unlimited profile speaking `kind`'s reply texts, named after the kind.
    pub fn provider(kind: ProviderKind) -> Self {
        Profile {
            kind,
            ..Profile::plain(kind.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>().unwrap(), kind);
        }
        assert_eq!(
            "Yahoo-JP".parse::<ProviderKind>().unwrap(),
            ProviderKind::YahooJp
        );
        assert!("hotmail".parse::<ProviderKind>().is_err());
    }

    #[test]
    fn provider_profile_is_named_after_its_kind() {
        let p = Profile::provider(ProviderKind::Docomo);
        assert_eq!(p.name, "docomo");
        assert_eq!(p.kind, ProviderKind::Docomo);
        assert_eq!((p.max_rate, p.max_conns, p.max_msgs_per_conn), (0, 0, 0));
        assert!(p.chunking);
    }
}
