//! The ESMTP extensions a server announced in its EHLO reply.

use super::reply::Reply;

/// ESMTP extensions the server announced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030 (BDAT).
    pub chunking: bool,
    /// RFC 1870 size limit, if announced.
    pub size: Option<u64>,
}

impl Capabilities {
    pub(crate) fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.text.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                _ => {}
            }
        }
        caps
    }
}
