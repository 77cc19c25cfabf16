//! The rows of a subscriber import body (`routes::import` streams the body through this):
//! CSV (RFC 4180 quoting, no newlines inside fields, header row naming an `email` column) or
//! NDJSON, each line validated (address, attributes) on its own. Pure: no I/O, fuzzed
//! (`tests/fuzz`).

use crate::address;
use crate::routes::subscribers::check_attributes;

/// The body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/csv`: a header row with an `email` column; other columns become attributes.
    Csv,
    /// `application/x-ndjson`: one `{"email": …, "attributes": {…}}` per line.
    Ndjson,
}

/// One usable row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line number in the body.
    pub line: u64,
    /// The address as given (domain lower-cased).
    pub email: String,
    /// The lower-cased address, for uniqueness.
    pub lower: String,
    /// The row's attributes (a JSON object).
    pub attributes: serde_json::Value,
}

/// Splits one CSV record (RFC 4180 quoting, no newlines inside fields).
pub(crate) fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start && !quoted => quoted = true,
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote".into());
                    }
                }
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            _ => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(field);
    Ok(out)
}

/// Turns an import body's lines into rows, one line at a time (the CSV header first).
#[derive(Debug)]
pub struct RowParser {
    format: Format,
    header: Option<Vec<String>>,
}

impl RowParser {
    /// A parser for a body in `format`.
    pub fn new(format: Format) -> Self {
        RowParser {
            format,
            header: None,
        }
    }

    /// Whether a CSV body's header row is still to come.
    pub fn before_header(&self) -> bool {
        self.format == Format::Csv && self.header.is_none()
    }

    /// One line (without its `\n`) → a row, `Ok(None)` for the CSV header or a blank line,
    /// `Err` with the reason for a line that cannot be used.
    pub fn row(&mut self, line_no: u64, line: &str) -> Result<Option<Row>, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Spreadsheet exports often start with a byte-order mark.
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(None);
        }
        let (email, attributes) = match self.format {
            Format::Ndjson => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct In {
                    email: String,
                    #[serde(default)]
                    attributes: Option<serde_json::Value>,
                }
                let v: In = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
                (
                    v.email,
                    v.attributes.unwrap_or_else(|| serde_json::json!({})),
                )
            }
            Format::Csv => {
                let fields = csv_fields(line)?;
                let Some(header) = &self.header else {
                    let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
                    if !names.iter().any(|n| n == "email") {
                        return Err("the header row has no \"email\" column".into());
                    }
                    self.header = Some(names);
                    return Ok(None);
                };
                if fields.len() != header.len() {
                    return Err(format!(
                        "{} fields, the header has {}",
                        fields.len(),
                        header.len()
                    ));
                }
                let mut email = String::new();
                let mut attrs = serde_json::Map::new();
                for (name, value) in header.iter().zip(fields) {
                    if name == "email" {
                        email = value;
                    } else {
                        attrs.insert(name.clone(), serde_json::Value::String(value));
                    }
                }
                (email, serde_json::Value::Object(attrs))
            }
        };
        let (email, lower) = address::normalize("email", &email).map_err(|e| e.to_string())?;
        check_attributes(&attributes)?;
        Ok(Some(Row {
            line: line_no,
            email,
            lower,
            attributes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::csv_fields;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_fields("a,b,c").expect("ok"), ["a", "b", "c"]);
        assert_eq!(
            csv_fields("\"a,1\",\"say \"\"hi\"\"\",").expect("ok"),
            ["a,1", "say \"hi\"", ""]
        );
        assert!(csv_fields("\"open").is_err());
        assert!(csv_fields("\"a\"b,c").is_err());
    }
}
