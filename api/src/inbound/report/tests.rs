use super::*;

/// A Postfix-style DSN: hard failure for one recipient, delay for another.
pub(crate) const DSN: &str = "From: MAILER-DAEMON@mx.gmail.test (Mail Delivery System)\r\n\
To: b-42-7@bounces.acme.test\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"BOUND\"\r\n\
\r\n\
--BOUND\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
This is the mail system. Your message could not be delivered.\r\n\
\r\n\
--BOUND\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.gmail.test\r\n\
Arrival-Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
\r\n\
Final-Recipient: rfc822; Hanako@Gmail.test\r\n\
Original-Recipient: rfc822;hanako@gmail.test\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does\r\n\
\x20not exist.\r\n\
\r\n\
Final-Recipient: rfc822; other@gmail.test\r\n\
Action: delayed\r\n\
Status: 4.2.1\r\n\
\r\n\
--BOUND\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Message-ID: <hk.42.7@acme.test>\r\n\
From: news@acme.test\r\n\
\r\n\
--BOUND--\r\n";

/// An ARF report (RFC 5965 §3 shape) with the original message attached.
pub(crate) const ARF: &str = "From: fbl@isp.test\r\n\
To: fbl@bounces.acme.test\r\n\
Subject: FW: Weekly news\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"part1\"\r\n\
\r\n\
--part1\r\n\
Content-Type: text/plain; charset=\"US-ASCII\"\r\n\
\r\n\
This is an email abuse report.\r\n\
\r\n\
--part1\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: SomeGenerator/1.0\r\n\
Version: 1\r\n\
Original-Rcpt-To: <Ichiro@other.test>\r\n\
\r\n\
--part1\r\n\
Content-Type: message/rfc822\r\n\
Content-Disposition: inline\r\n\
\r\n\
From: news@acme.test\r\n\
To: ichiro@other.test\r\n\
Message-ID: <hk.42.8@acme.test>\r\n\
Subject: Weekly news\r\n\
\r\n\
Hello.\r\n\
--part1--\r\n";

#[test]
fn dsn_recipients_with_actions_and_codes() {
    let Report::Dsn(r) = parse(DSN.as_bytes()) else {
        panic!("a DSN: {:?}", parse(DSN.as_bytes()));
    };
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].recipient.as_deref(), Some("hanako@gmail.test"));
    assert_eq!(r[0].original.as_deref(), Some("hanako@gmail.test"));
    assert_eq!(r[1].original, None);
    assert_eq!(r[0].action, "failed");
    assert_eq!(r[0].status, "5.1.1");
    assert!(
        r[0].diagnostic.contains("does not exist"),
        "unfolded: {}",
        r[0].diagnostic
    );
    assert!(r[0].is_hard() && !r[0].is_soft());
    assert_eq!(r[1].recipient.as_deref(), Some("other@gmail.test"));
    assert!(r[1].is_soft() && !r[1].is_hard());
}

#[test]
fn arf_complaint_names_type_recipient_and_message() {
    assert_eq!(
        parse(ARF.as_bytes()),
        Report::Complaint(Complaint {
            feedback_type: "abuse".into(),
            recipient: Some("ichiro@other.test".into()),
            message_id: Some("hk.42.8@acme.test".into()),
        })
    );
}

#[test]
fn anything_else_is_unrecognised_not_an_error() {
    for raw in [
        &b""[..],
        b"\x00\xff\xfe garbage",
        b"From: a@b.test\r\nSubject: out of office\r\n\r\nI am away.\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n--x--\r\n",
    ] {
        assert!(matches!(parse(raw), Report::Unrecognised(_)), "{:?}", String::from_utf8_lossy(raw));
    }
}
