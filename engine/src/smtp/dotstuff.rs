//! Preparing a message for the DATA phase: canonical CRLF line endings and dot-stuffing
//! (RFC 5321 §4.5.2), so no sequence in a message can end DATA early or smuggle a second
//! message (bare LF or bare CR before a dot are normalized too).

/// Appends `input` to `out` with every line ending made CRLF (bare LF and bare CR both become
/// CRLF), every line that starts with `.` given a second `.`, and a final CRLF if missing.
/// The caller then appends the terminating `.\r\n`.
pub fn stuff_into(out: &mut Vec<u8>, input: &[u8]) {
    normalize_into(out, input, true);
}

/// Appends `input` to `out` with canonical CRLF line endings and a final CRLF if missing, but
/// no dot-stuffing: the form `BDAT` carries (RFC 3030 sends the octets as they are).
pub fn canonical_into(out: &mut Vec<u8>, input: &[u8]) {
    normalize_into(out, input, false);
}

fn normalize_into(out: &mut Vec<u8>, input: &[u8], stuff: bool) {
    out.reserve(input.len() + input.len() / 64 + 4);
    let mut at_line_start = true;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if stuff && at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
}

/// [`stuff_into`] into a new buffer.
pub fn stuff(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    stuff_into(&mut out, input);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_smuggling_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"hello", b"hello\r\n"),
            (b"hello\r\n", b"hello\r\n"),
            (b".", b"..\r\n"),
            (b".hidden\r\n", b"..hidden\r\n"),
            (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n"),
            (b"a\r\n..\r\n", b"a\r\n...\r\n"),
            (b"mid.dot\r\n", b"mid.dot\r\n"),
            // SMTP smuggling: bare LF / bare CR line ends around a dot.
            (b"a\n.\nMAIL FROM:<x>", b"a\r\n..\r\nMAIL FROM:<x>\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n"),
            (b"a\r\n.\nb", b"a\r\n..\r\nb\r\n"),
            (b"a\n.\r\nb", b"a\r\n..\r\nb\r\n"),
            (b"\r\n", b"\r\n"),
            (b"\n\n", b"\r\n\r\n"),
            (b"x\r\r\n", b"x\r\n\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                stuff(input),
                want.to_vec(),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn stuffed_output_never_contains_a_terminator() {
        let nasty = b"x\r\n.\r\ny\n.\nz\r.\r\r\n.\r\n";
        let out = stuff(nasty);
        let terminator = b"\r\n.\r\n";
        assert!(!out.windows(terminator.len()).any(|w| w == terminator));
        assert!(
            !out.contains(&b'\n')
                || out
                    .windows(2)
                    .filter(|w| w[1] == b'\n')
                    .all(|w| w[0] == b'\r')
        );
    }
}
