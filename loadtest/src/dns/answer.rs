//! Turning one query packet into one response packet, without I/O.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::zone::{Fault, Lookup, Zone};

/// Largest UDP payload offered to EDNS clients (the DNS-flag-day value).
const EDNS_PAYLOAD: u16 = 1232;
/// UDP payload limit for clients without EDNS (RFC 1035).
const CLASSIC_PAYLOAD: usize = 512;

/// The response to `packet`, or `None` when nothing must be sent: the packet is malformed,
/// is itself a response, or asks for a `TIMEOUT` name.
pub fn respond(packet: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false)
        .add_queries(request.queries().iter().cloned());
    let limit = match request.extensions() {
        Some(edns) => {
            let mut edns_out = Edns::new();
            edns_out.set_max_payload(EDNS_PAYLOAD).set_version(0);
            response.set_edns(edns_out);
            usize::from(edns.max_payload().clamp(512, EDNS_PAYLOAD))
        }
        None => CLASSIC_PAYLOAD,
    };

    let code = if request.op_code() != OpCode::Query {
        ResponseCode::NotImp
    } else if let [query] = request.queries() {
        match zone.lookup(query.name()) {
            Lookup::Missing => ResponseCode::NXDomain,
            Lookup::Fault(Fault::ServFail) => ResponseCode::ServFail,
            Lookup::Fault(Fault::Timeout) => return None,
            Lookup::Records(records) => {
                add_answers(&mut response, zone, records, query.query_type());
                ResponseCode::NoError
            }
        }
    } else {
        ResponseCode::FormErr
    };
    response.set_response_code(code);

    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too big for UDP: send the header and question with TC set (this server has no TCP,
    // but test zones never get this large).
    response.take_answers();
    response.take_additionals();
    response.set_truncated(true);
    response.to_vec().ok()
}

/// Adds the records of the asked type (all for ANY) and, for MX, the in-zone addresses of
/// the exchanges as additional records (saving the sender a lookup, like real servers).
fn add_answers(response: &mut Message, zone: &Zone, records: &[Record], qtype: RecordType) {
    let wanted = |r: &&Record| qtype == RecordType::ANY || r.record_type() == qtype;
    response.add_answers(records.iter().filter(wanted).cloned());
    if qtype != RecordType::MX {
        return;
    }
    let mut seen: Vec<&Name> = Vec::new();
    for record in records.iter().filter(wanted) {
        let RData::MX(mx) = record.data() else {
            continue;
        };
        let exchange = mx.exchange();
        if exchange.is_root() || seen.contains(&exchange) {
            continue;
        }
        seen.push(exchange);
        if let Lookup::Records(targets) = zone.lookup(exchange) {
            let addresses = targets
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA));
            response.add_additionals(addresses.cloned());
        }
    }
}
