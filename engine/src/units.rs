//! Human-readable durations (`"30s"`, `"500ms"`, `"2h"`) and rates (`"100/s"`, `"6000/m"`,
//! `"unlimited"`) for configuration files, parsed with `TryFrom<&str>`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written with a unit suffix: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl TryFrom<&str> for Span {
    type Error = String;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h, d)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration {s:?} must start with a whole number"))?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("duration {s:?} has unknown unit {unit:?}")),
        };
        n.checked_mul(ms)
            .map(|ms| Span(Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::try_from(s.as_str()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A message rate: messages per second, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate(None);

    /// `n` messages per second.
    pub fn per_second(n: f64) -> Rate {
        Rate(Some(n))
    }
}

impl TryFrom<&str> for Rate {
    type Error = String;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::UNLIMITED);
        }
        let (num, per) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} must look like \"100/s\" or \"unlimited\""))?;
        let n: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?} must start with a number"))?;
        if !(n.is_finite() && n > 0.0) {
            return Err(format!("rate {s:?} must be positive"));
        }
        let secs = match per.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("rate {s:?} has unknown period {other:?} (s, m, h)")),
        };
        Ok(Rate(Some(n / secs)))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::try_from(s.as_str()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_with_units() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("4d", 345_600_000),
        ];
        for (s, ms) in ok {
            assert_eq!(
                Span::try_from(s),
                Ok(Span(Duration::from_millis(ms))),
                "{s}"
            );
        }
        for bad in ["", "30", "s", "3x", "-1s", "1.5s", "99999999999999999999d"] {
            assert!(Span::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_parse_per_period() {
        assert_eq!(Rate::try_from("100/s"), Ok(Rate(Some(100.0))));
        assert_eq!(Rate::try_from("600/m"), Ok(Rate(Some(10.0))));
        assert_eq!(Rate::try_from("unlimited"), Ok(Rate::UNLIMITED));
        for bad in ["100", "0/s", "-5/s", "x/s", "10/d", "nan/s"] {
            assert!(Rate::try_from(bad).is_err(), "{bad}");
        }
    }
}
