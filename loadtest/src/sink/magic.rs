//! Magic recipients: local-part prefixes that make the sink misbehave on purpose, so tests
//! can drive every error path of the engine through an ordinary recipient list.

/// What a recipient's local part asks the sink to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// An ordinary recipient.
    None,
    /// `tempfail…`: RCPT always gets 451.
    TempFail,
    /// `defer<N>-…`: the first N RCPT attempts (per address, across connections) get 421
    /// and the connection closes.
    Defer(u32),
    /// `421…`: RCPT always gets 421 and the connection closes.
    Always421,
    /// `550…` / `unknown…`: RCPT gets Gmail's multi-line unknown-user reply.
    Unknown,
    /// `garbage…`: RCPT gets a line that is not an SMTP reply.
    Garbage,
    /// `reset…`: RCPT accepted, then the connection is reset when body bytes (or an
    /// accepted BDAT chunk) arrive.
    Reset,
    /// `hang…`: RCPT accepted, then end-of-DATA (or `BDAT … LAST`) is never answered.
    Hang,
}

impl Magic {
    /// Classifies an address by its local part, case-insensitively.
    pub fn of(address: &str) -> Magic {
        let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
        let local = local.as_bytes();
        let has = |prefix: &str| {
            local.len() >= prefix.len()
                && local[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        };
        if has("tempfail") {
            Magic::TempFail
        } else if has("defer") {
            defer_count(&local[5..]).map_or(Magic::None, Magic::Defer)
        } else if has("421") {
            Magic::Always421
        } else if has("550") || has("unknown") {
            Magic::Unknown
        } else if has("garbage") {
            Magic::Garbage
        } else if has("reset") {
            Magic::Reset
        } else if has("hang") {
            Magic::Hang
        } else {
            Magic::None
        }
    }
}

/// Parses the `<N>-` that follows `defer`; anything else is not magic.
fn defer_count(rest: &[u8]) -> Option<u32> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_case_insensitive_and_only_look_at_the_local_part() {
        assert_eq!(Magic::of("TempFail-1@x.test"), Magic::TempFail);
        assert_eq!(Magic::of("defer2-bob@x.test"), Magic::Defer(2));
        assert_eq!(Magic::of("defer-bob@x.test"), Magic::None);
        assert_eq!(Magic::of("defer2bob@x.test"), Magic::None);
        assert_eq!(Magic::of("421x@x.test"), Magic::Always421);
        assert_eq!(Magic::of("550@x.test"), Magic::Unknown);
        assert_eq!(Magic::of("UNKNOWN.user@x.test"), Magic::Unknown);
        assert_eq!(Magic::of("garbage@x.test"), Magic::Garbage);
        assert_eq!(Magic::of("reset1@x.test"), Magic::Reset);
        assert_eq!(Magic::of("hang@x.test"), Magic::Hang);
        assert_eq!(Magic::of("bob@tempfail.test"), Magic::None);
        assert_eq!(Magic::of("deferred-99999999999-x@x.test"), Magic::None);
    }
}
