//! Japanese mobile carrier mail domains (NTT docomo, au/KDDI, SoftBank, Y!mobile).
//!
//! Both sides need the list: the engine writes a campaign's mobile charset
//! (ISO-2022-JP) for these recipients, the recorder suppresses them after one permanent
//! failure (their networks block senders that keep mailing failing addresses).

/// The carrier domains, lower case.
pub const CARRIER_DOMAINS: [&str; 7] = [
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "biz.ezweb.ne.jp",
    "au.com",
    "softbank.ne.jp",
    "i.softbank.jp",
    "ymobile.ne.jp",
];

/// Whether `domain` (any case) is a carrier's.
pub fn is_carrier(domain: &str) -> bool {
    CARRIER_DOMAINS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_match_in_any_case_and_nothing_else() {
        assert!(is_carrier("docomo.ne.jp"));
        assert!(is_carrier("EZweb.ne.jp"));
        assert!(!is_carrier("gmail.com"));
        assert!(!is_carrier("x.docomo.ne.jp"));
    }
}
