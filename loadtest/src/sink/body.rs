//! Finding the end of a DATA body (`CRLF.CRLF`) in a stream that arrives in arbitrary pieces.

/// The terminator of a DATA body, including the CRLF that ends the last body line.
const TERMINATOR: &[u8; 5] = b"\r\n.\r\n";

/// Scans body bytes for the terminator, remembering a partial match between reads so a
/// terminator split across reads is still found. Costs one byte of state and no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyScanner {
    /// How many bytes of [`TERMINATOR`] the bytes seen so far end with.
    matched: u8,
}

impl BodyScanner {
    /// A scanner for a body that starts right after the `DATA` line's CRLF, so a body that is
    /// just `.\r\n` (an empty message) ends at once.
    pub fn new() -> Self {
        BodyScanner { matched: 2 }
    }

    /// Feeds the next bytes of the body. Returns how many bytes of `chunk` make up the rest
    /// of the body including the terminator, or `None` if the body goes on past `chunk`.
    pub fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < chunk.len() {
            if self.matched == 0 {
                // Nothing pending: jump to the next CR, the only byte that can start a match.
                let rest = chunk.get(i..).unwrap_or_default();
                i += find_cr(rest)?;
            }
            let byte = chunk.get(i).copied()?;
            i += 1;
            self.matched = if TERMINATOR.get(usize::from(self.matched)) == Some(&byte) {
                self.matched + 1
            } else if byte == b'\r' {
                1
            } else {
                0
            };
            if usize::from(self.matched) == TERMINATOR.len() {
                // Ready for the next body, which also starts after a CRLF.
                *self = BodyScanner::new();
                return Some(i);
            }
        }
        None
    }
}

impl Default for BodyScanner {
    fn default() -> Self {
        BodyScanner::new()
    }
}

/// Position of the first CR in `hay`, checking 32-byte blocks with a branch-free OR that the
/// compiler vectorises, since this loop sees every body byte the sink receives.
fn find_cr(hay: &[u8]) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut base = 0;
    for block in hay.chunks(BLOCK) {
        let any = block.iter().fold(false, |seen, &b| seen | (b == b'\r'));
        if any {
            return block.iter().position(|&b| b == b'\r').map(|p| base + p);
        }
        base += block.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_terminator_in_one_chunk() {
        let body = b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<a@b>\r\n";
        let mut s = BodyScanner::new();
        assert_eq!(s.scan(body), Some(body.len() - "MAIL FROM:<a@b>\r\n".len()));
    }

    #[test]
    fn empty_body_ends_at_once() {
        assert_eq!(BodyScanner::new().scan(b".\r\nQUIT\r\n"), Some(3));
    }

    #[test]
    fn dot_stuffed_lines_do_not_end_the_body() {
        let mut s = BodyScanner::new();
        assert_eq!(s.scan(b"a\r\n..\r\n.x\r\n"), None);
        assert_eq!(s.scan(b".\r\n"), Some(3));
    }

    #[test]
    fn terminator_split_at_every_position() {
        let body: Vec<u8> = [
            &b"line one\r\nline two\r\r\n"[..],
            &[b'x'; 100][..],
            b"\r\n.\r\n",
        ]
        .concat();
        for split in 0..=body.len() {
            let mut s = BodyScanner::new();
            let (a, b) = body.split_at(split);
            let got = match s.scan(a) {
                Some(n) => n,
                None => a.len() + s.scan(b).unwrap_or(usize::MAX),
            };
            assert_eq!(got, body.len(), "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let body = b"x\r\n\r\n.\r\n";
        let mut s = BodyScanner::new();
        for (i, b) in body.iter().enumerate() {
            let r = s.scan(std::slice::from_ref(b));
            assert_eq!(r.is_some(), i + 1 == body.len());
        }
    }
}
