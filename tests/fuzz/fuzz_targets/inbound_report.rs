//! The DSN (RFC 3464) and ARF (RFC 5965) report parser over whatever arrives at the inbound
//! listener: never panics; what it extracts is text it can print.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = hikyaku_api::inbound::report::parse(data);
    let _ = format!("{report:?}");
});
