//! The compact binary encoding shared by every wire type.
//!
//! Each encoded value starts with a one-byte type tag and a one-byte version, then fields in a
//! fixed order: unsigned integers as LEB128 varints, strings as a varint length and UTF-8 bytes.
//! It is hand-written rather than serde-based because it sits on the hot path (one decode per job
//! read, one encode per event) and must stay byte-stable across releases; readers reject unknown
//! tags and versions with a [`DecodeError`] instead of guessing.

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
    /// The version is newer than this build understands.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
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
}

impl<'a> Reader<'a> {
    /// Checks the tag and returns the reader with the version byte.
    pub fn new(buf: &'a [u8], tag: u8, max_version: u8) -> Result<(Self, u8), DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::Truncated { field: "header" });
        }
        if buf[0] != tag {
            return Err(DecodeError::WrongTag {
                found: buf[0],
                expected: tag,
            });
        }
        let version = buf[1];
        if version == 0 || version > max_version {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok((Self { buf, pos: 2 }, version))
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

    /// Fails if bytes remain.
    pub fn end(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
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
            Reader::new(&[1, 9], 1, 1).err(),
            Some(DecodeError::UnsupportedVersion(9))
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
}
