//! Reading a Prometheus text exposition (what the engine's `/metrics` serves) far enough to
//! get one histogram summed over its label sets, and quantiles of it the way Prometheus's
//! `histogram_quantile` computes them (linear interpolation inside the bucket).

/// A histogram summed over every label set: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`; `+Inf` is `f64::INFINITY`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of the `_count` series (observations).
    pub count: f64,
    /// Sum of the `_sum` series.
    pub sum: f64,
}

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Metric name (`hikyaku_x_bucket`).
    pub name: &'a str,
    /// Label pairs, values unescaped.
    pub labels: Vec<(&'a str, String)>,
    /// The value.
    pub value: f64,
}

/// Parses one line of the text format; `None` for comments, blank or malformed lines.
pub fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, consumed) = parse_labels(after)?;
        labels = parsed;
        rest = &after[consumed..];
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `a="x",b="y\"z"}`; returns the pairs and the bytes consumed including the `}`.
fn parse_labels(s: &str) -> Option<(Vec<(&str, String)>, usize)> {
    let mut labels = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b',')
        {
            i += 1;
        }
        if *bytes.get(i)? == b'}' {
            return Some((labels, i + 1));
        }
        let key_start = i;
        while bytes.get(i).is_some_and(|b| *b != b'=') {
            i += 1;
        }
        let key = s.get(key_start..i)?.trim();
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if *bytes.get(i)? != b'"' {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    i += 1;
                    match *bytes.get(i)? {
                        b'n' => value.push('\n'),
                        other => value.push(char::from(other)),
                    }
                    i += 1;
                }
                _ => {
                    // Copy one whole UTF-8 character.
                    let ch = s.get(i..)?.chars().next()?;
                    value.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        i += 1;
        labels.push((key, value));
    }
}

/// A sample value or `le` bound: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The histogram `name` (without `_bucket`), its series summed over every label set other
/// than `le`; `None` if the exposition has no `name_bucket` series.
pub fn histogram(text: &str, name: &str) -> Option<Histogram> {
    let bucket_name = format!("{name}_bucket");
    let count_name = format!("{name}_count");
    let sum_name = format!("{name}_sum");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut count = 0.0;
    let mut sum = 0.0;
    for sample in text.lines().filter_map(parse_line) {
        if sample.name == bucket_name {
            let Some(le) = sample
                .labels
                .iter()
                .find(|(k, _)| *k == "le")
                .and_then(|(_, v)| parse_value(v))
            else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += sample.value,
                None => buckets.push((le, sample.value)),
            }
        } else if sample.name == count_name {
            count += sample.value;
        } else if sample.name == sum_name {
            sum += sample.value;
        }
    }
    if buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(Histogram {
        buckets,
        count,
        sum,
    })
}

/// The `q` quantile (0–1) of cumulative `buckets` sorted by bound, as Prometheus's
/// `histogram_quantile`: find the bucket holding rank `q × total` and interpolate linearly
/// between its lower and upper bound (the first bucket's lower bound is 0). A rank in the
/// `+Inf` bucket answers the largest finite bound. `None` without observations or without a
/// `+Inf` bucket.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !(0.0..=1.0).contains(&q) || last_le != f64::INFINITY || total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for (i, &(le, cum)) in buckets.iter().enumerate() {
        // Counts are cumulative; a scrape racing an update may dip, so never go backwards.
        let cum = cum.max(prev_count);
        if cum >= rank {
            if le == f64::INFINITY {
                return Some(if i == 0 { 0.0 } else { prev_le });
            }
            if i == 0 && le <= 0.0 {
                return Some(le);
            }
            let lower = if i == 0 { 0.0 } else { prev_le };
            let in_bucket = cum - prev_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - prev_count) / in_bucket);
        }
        prev_le = le;
        prev_count = cum;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEXT: &str = r#"# HELP hikyaku_delivery_latency_seconds Enqueue to accepted.
# TYPE hikyaku_delivery_latency_seconds histogram
hikyaku_delivery_latency_seconds_bucket{site="google",le="0.1"} 10
hikyaku_delivery_latency_seconds_bucket{site="google",le="1"} 60
hikyaku_delivery_latency_seconds_bucket{site="google",le="+Inf"} 100
hikyaku_delivery_latency_seconds_sum{site="google"} 90.5
hikyaku_delivery_latency_seconds_count{site="google"} 100
hikyaku_delivery_latency_seconds_bucket{site="we\"ird,}",le="0.1"} 0
hikyaku_delivery_latency_seconds_bucket{site="we\"ird,}",le="1"} 40
hikyaku_delivery_latency_seconds_bucket{site="we\"ird,}",le="+Inf"} 100
hikyaku_delivery_latency_seconds_sum{site="we\"ird,}"} 9.5
hikyaku_delivery_latency_seconds_count{site="we\"ird,}"} 100
hikyaku_smtp_reply_seconds_bucket{site="google",le="0.1"} 7
hikyaku_messages_total{site="google",result="delivered"} 100 1700000000000
"#;

    #[test]
    fn lines_parse_with_escapes_and_timestamps() {
        let s = parse_line(r#"m{a="x\"y",b="\\"} 3.5 123"#).unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(
            s.labels,
            vec![("a", "x\"y".to_owned()), ("b", "\\".to_owned())]
        );
        assert_eq!(s.value, 3.5);
        assert_eq!(parse_line("plain 7").unwrap().value, 7.0);
        assert_eq!(parse_line("m{} +Inf").unwrap().value, f64::INFINITY);
        assert_eq!(parse_line("# HELP m x"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line(r#"m{a="x} 1"#), None, "unterminated");
        assert_eq!(parse_line("m{a=x} 1"), None, "unquoted");
    }

    #[test]
    fn histogram_sums_label_sets() {
        let h = histogram(TEXT, "hikyaku_delivery_latency_seconds").unwrap();
        assert_eq!(
            h.buckets,
            vec![(0.1, 10.0), (1.0, 100.0), (f64::INFINITY, 200.0)]
        );
        assert_eq!(h.count, 200.0);
        assert_eq!(h.sum, 100.0);
        assert!(histogram(TEXT, "hikyaku_nothing_here").is_none());
        assert!(histogram("", "x").is_none());
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [(0.1, 10.0), (1.0, 100.0), (f64::INFINITY, 200.0)];
        // Rank 5 of 200 is half-way through the first bucket (0 to 0.1).
        assert!((quantile(0.025, &b).unwrap() - 0.05).abs() < 1e-12);
        // Rank 55: 45 of the 90 in (0.1, 1] → 0.1 + 0.9 × 0.5.
        assert!((quantile(0.275, &b).unwrap() - 0.55).abs() < 1e-12);
        // Rank 100 sits exactly on the 1 s bound.
        assert!((quantile(0.5, &b).unwrap() - 1.0).abs() < 1e-12);
        // Ranks in +Inf answer the largest finite bound.
        assert_eq!(quantile(0.99, &b), Some(1.0));
        assert_eq!(quantile(0.0, &b), Some(0.0));
    }

    #[test]
    fn quantile_edge_cases() {
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 5.0)]), None);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(1.0, 3.0), (2.0, 3.0)]), None, "no +Inf");
        assert_eq!(quantile(1.5, &[(1.0, 3.0), (f64::INFINITY, 3.0)]), None);
        // Everything in +Inf: the largest finite bound.
        assert_eq!(
            quantile(0.5, &[(0.5, 0.0), (1.0, 0.0), (f64::INFINITY, 4.0)]),
            Some(1.0)
        );
        // A non-monotonic scrape does not produce a negative in-bucket count.
        let q = quantile(0.5, &[(1.0, 6.0), (2.0, 5.0), (f64::INFINITY, 10.0)]).unwrap();
        assert!((q - 1.0 / 1.2).abs() < 1e-12, "{q}");
        // The engine's buckets, all observations between 2.5 s and 5 s.
        let engine = [
            (0.005, 0.0),
            (0.01, 0.0),
            (2.5, 0.0),
            (5.0, 1000.0),
            (f64::INFINITY, 1000.0),
        ];
        assert!((quantile(0.5, &engine).unwrap() - 3.75).abs() < 1e-12);
        assert!((quantile(0.99, &engine).unwrap() - 4.975).abs() < 1e-12);
    }
}
