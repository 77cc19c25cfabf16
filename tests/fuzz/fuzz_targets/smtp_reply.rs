//! The SMTP reply parser over whatever a remote server sends: never panics, never claims more
//! bytes than it was given, and a reply it accepts has a code in 200–599 or an intermediate 3xx.
#![no_main]

use hikyaku_engine::smtp::reply::parse_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    // Read replies one after another, as a pipelining session does.
    while let Ok(Some((reply, used))) = parse_reply(buf) {
        assert!(
            used > 0 && used <= buf.len(),
            "used {used} of {}",
            buf.len()
        );
        assert!((100..600).contains(&reply.code), "code {}", reply.code);
        let _ = reply.one_line();
        let _ = (
            reply.is_positive(),
            reply.is_transient(),
            reply.closes_connection(),
        );
        buf = &buf[used..];
    }
});
