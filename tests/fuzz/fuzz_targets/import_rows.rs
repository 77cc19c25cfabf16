//! Subscriber import bodies (CSV and NDJSON), line by line as the route streams them: never
//! panics, and every row it accepts has an address that validates again unchanged and an
//! object of attributes.
#![no_main]

use hikyaku_api::import_rows::{Format, RowParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let format = if first & 1 == 0 {
        Format::Csv
    } else {
        Format::Ndjson
    };
    let body = String::from_utf8_lossy(rest);
    let mut parser = RowParser::new(format);
    for (i, line) in body.split('\n').enumerate() {
        if let Ok(Some(row)) = parser.row(i as u64 + 1, line) {
            let (email, lower) =
                hikyaku_api::address::normalize("email", &row.email).expect("accepted address");
            assert_eq!(email, row.email);
            assert_eq!(lower, row.lower);
            assert!(row.attributes.is_object());
            assert!(!row.email.contains(['\r', '\n', '\0']));
        }
    }
});
