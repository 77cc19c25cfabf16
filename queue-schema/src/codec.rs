//! The compact binary encoding shared by every wire type.
//!
//! Each encoded value starts with a one-byte type tag and a one-byte version, then fields in a
//! fixed order: unsigned integers as LEB128 varints, strings as a varint length and UTF-8 bytes.
//! It is hand-written rather than serde-based because it sits on the hot path (one decode per job
//! read, one encode per event) and must stay byte-stable across releases.
//!
//! # Versions across releases (rolling upgrades)
//!
//! A fleet is upgraded one process at a time, so for a while nodes of two releases share the
//! queues: each must read what the other writes. The rules:
//!
//! - A new release only *appends* fields to a type, under a higher version; it never reorders,
//!   removes or re-means one. A value is written at the lowest version that holds it (a job
//!   without a last try is still version 1), so what a release writes for the features the
//!   previous one had is byte for byte what that one wrote.
//! - A reader meeting a version newer than it knows reads the fields it knows and ignores the
//!   rest (they are appended), unless the writer set [`MUST_UNDERSTAND`] in the version byte:
//!   then the value means something an older reader would get wrong (a new status, a field that
//!   changes how the rest is read), and decoding fails with [`DecodeError::TooNew`]. What to do
//!   then is the caller's: an engine puts such a job back for another node, the recorder leaves
//!   such an event pending for a newer recorder; neither ends or drops it.
//! - Unknown tags, version 0, truncation and trailing bytes within a known version stay errors.

use thiserror::Error;

/// Why bytes could not be decoded into a wire type.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("truncated input while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The type tag is not the expected one.
    #[error("wrong type tag {found:#04x}, expected {expected:#04x}")]
    WrongTag {
        /// Tag found.
        found: u8,
        /// Tag expected.
        expected: u8,
    },
    /// The version byte is not a version (0).
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A newer release wrote this value and marked it [`MUST_UNDERSTAND`]: this build must not
    /// act on it (it is for a node of that release).
    #[error("version {0} is newer than this build and must be understood to be used")]
    TooNew(u8),
    /// A string field is not valid UTF-8.
    #[error("field {field} is not UTF-8")]
    NotUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A varint is longer than 10 bytes or a value is out of range.
    #[error("field {field} is out of range")]
    OutOfRange {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// The version byte's high bit: a reader that does not know the version must not act on the
/// value ([`DecodeError::TooNew`]) rather than read the fields it knows.
pub const MUST_UNDERSTAND: u8 = 0x80;

impl DecodeError {
    /// The value was written by a newer release for its own nodes: leave it for them.
    pub fn is_too_new(&self) -> bool {
        matches!(self, DecodeError::TooNew(_))
    }
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer whose output starts with `tag` and `version`.
    pub fn new(tag: u8, version: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(tag);
        buf.push(version);
        Self { buf }
    }

    /// Appends an unsigned varint.
    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    /// Appends a length-prefixed string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends a count followed by that many strings.
    pub fn strs<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        self.u64(items.len() as u64);
        for s in items {
            self.str(s.as_ref());
        }
        self
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields back in the order they were written.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The value is of a newer version: fields after the known ones are ignored.
    newer: bool,
}

impl<'a> Reader<'a> {
    /// Checks the tag and returns the reader with the version (without [`MUST_UNDERSTAND`]).
    /// `known` is the newest version this build reads; a newer one is read as far as the
    /// fields of `known` go, unless marked [`MUST_UNDERSTAND`].
    pub fn new(buf: &'a [u8], tag: u8, known: u8) -> Result<(Self, u8), DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::Truncated { field: "header" });
        }
        if buf[0] != tag {
            return Err(DecodeError::WrongTag {
                found: buf[0],
                expected: tag,
            });
        }
        let version = buf[1] & !MUST_UNDERSTAND;
        if version == 0 {
            return Err(DecodeError::UnsupportedVersion(buf[1]));
        }
        let newer = version > known;
        if newer && buf[1] & MUST_UNDERSTAND != 0 {
            return Err(DecodeError::TooNew(version));
        }
        Ok((Self { buf, pos: 2, newer }, version))
    }

    /// Reads an unsigned varint.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(DecodeError::Truncated { field })?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::OutOfRange { field });
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::OutOfRange { field })
    }

    /// Reads a varint that must fit in `T`.
    pub fn int<T: TryFrom<u64>>(&mut self, field: &'static str) -> Result<T, DecodeError> {
        T::try_from(self.u64(field)?).map_err(|_| DecodeError::OutOfRange { field })
    }

    /// Reads a length-prefixed string.
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u64(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::OutOfRange { field })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated { field })?;
        let s = std::str::from_utf8(&self.buf[self.pos..end])
            .map_err(|_| DecodeError::NotUtf8 { field })?;
        self.pos = end;
        Ok(s)
    }

    /// Reads a count-prefixed list of strings.
    pub fn strs(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let n = self.u64(field)?;
        // Every string takes at least one byte, which bounds a hostile count.
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(DecodeError::OutOfRange { field });
        }
        (0..n).map(|_| self.str(field).map(str::to_owned)).collect()
    }

    /// Fails if bytes remain — unless the value is of a newer version, whose appended fields
    /// this build does not know.
    pub fn end(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            _ if self.newer => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::new(1, 1, 16);
            w.u64(v);
            let bytes = w.finish();
            let (mut r, _) = Reader::new(&bytes, 1, 1).expect("header");
            assert_eq!(r.u64("v"), Ok(v));
            r.end().expect("no trailing bytes");
        }
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        assert!(Reader::new(&[], 1, 1).is_err());
        assert_eq!(
            Reader::new(&[2, 1], 1, 1).err(),
            Some(DecodeError::WrongTag {
                found: 2,
                expected: 1
            })
        );
        assert_eq!(
            Reader::new(&[1, 0], 1, 1).err(),
            Some(DecodeError::UnsupportedVersion(0))
        );
        assert_eq!(
            Reader::new(&[1, 0x89], 1, 1).err(),
            Some(DecodeError::TooNew(9))
        );
        let (mut r, _) = Reader::new(&[1, 1, 0xff, 0xff], 1, 1).expect("header");
        assert!(r.u64("x").is_err());
        let (mut r, _) = Reader::new(&[1, 1, 10, b'a'], 1, 1).expect("header");
        assert!(r.str("s").is_err());
        let (mut r, _) = Reader::new(&[1, 1, 0xff, 0xff, 0xff, 0x0f], 1, 1).expect("header");
        assert!(r.strs("l").is_err());
        let (mut r, _) = Reader::new(&[1, 1, 2, 0xc3, 0x28], 1, 1).expect("header");
        assert_eq!(r.str("s"), Err(DecodeError::NotUtf8 { field: "s" }));
    }

    #[test]
    fn newer_versions_are_read_as_far_as_known_unless_they_must_be_understood() {
        // Version 3 of a type this build knows up to 2: the known field, then an appended one.
        let mut w = Writer::new(7, 3, 8);
        w.u64(42).str("appended by a newer release");
        let bytes = w.finish();
        let (mut r, version) = Reader::new(&bytes, 7, 2).expect("newer, readable");
        assert_eq!(version, 3);
        assert_eq!(r.u64("known"), Ok(42));
        assert_eq!(r.end(), Ok(()), "appended fields are ignored");
        // The same, marked must-understand: not for this build.
        let mut marked = bytes.clone();
        marked[1] |= MUST_UNDERSTAND;
        assert_eq!(
            Reader::new(&marked, 7, 2).err(),
            Some(DecodeError::TooNew(3))
        );
        assert!(DecodeError::TooNew(3).is_too_new());
        // A build that knows version 3 reads the marked value like any other.
        let (mut r, version) = Reader::new(&marked, 7, 3).expect("known");
        assert_eq!((version, r.u64("known")), (3, Ok(42)));
        // Trailing bytes within a known version are still an error.
        let (mut r, _) = Reader::new(&bytes, 7, 3).expect("known");
        r.u64("known").expect("field");
        assert!(matches!(r.end(), Err(DecodeError::Trailing(_))));
    }
}
