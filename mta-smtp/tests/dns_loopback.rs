//! The hickory-backed resolver against a DNS server on loopback that
//! answers from a fixed zone: records, NXDOMAIN, NODATA, SERVFAIL,
//! REFUSED and silence each come out as the answer a mail decision needs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use mta_core::dns::{DnsAnswer, MxRecord, Resolver};
use mta_smtp::dns::HickoryResolver;
use tokio::net::UdpSocket;

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// The test zone: (name, type) → records. Names listed with no records of
/// a type answer NODATA; names not listed answer NXDOMAIN.
fn zone() -> HashMap<(String, RecordType), Vec<RData>> {
    let mut z: HashMap<(String, RecordType), Vec<RData>> = HashMap::new();
    let mut add =
        |n: &str, t: RecordType, d: RData| z.entry((n.to_string(), t)).or_default().push(d);
    add(
        "example.test.",
        RecordType::MX,
        RData::MX(MX::new(10, name("mx1.example.test."))),
    );
    add(
        "example.test.",
        RecordType::MX,
        RData::MX(MX::new(20, name("MX2.Example.test."))),
    );
    add(
        "mx1.example.test.",
        RecordType::A,
        RData::A(A("192.0.2.25".parse().unwrap())),
    );
    add(
        "mx1.example.test.",
        RecordType::AAAA,
        RData::AAAA(AAAA("2001:db8::25".parse().unwrap())),
    );
    add(
        "nomail.test.",
        RecordType::MX,
        RData::MX(MX::new(0, Name::root())),
    );
    add(
        "2.0.0.127.bl.test.",
        RecordType::A,
        RData::A(A("127.0.0.2".parse().unwrap())),
    );
    add(
        "2.0.0.127.bl.test.",
        RecordType::TXT,
        RData::TXT(TXT::new(vec![
            "listed, see ".into(),
            "https://bl.test/".into(),
        ])),
    );
    add(
        "25.2.0.192.in-addr.arpa.",
        RecordType::PTR,
        RData::PTR(PTR(name("mx1.example.test."))),
    );
    add(
        "example.test.",
        RecordType::NS,
        RData::NS(NS(name("ns.example.test."))),
    );
    // Exists (has an A record) but no MX.
    add(
        "addressonly.test.",
        RecordType::A,
        RData::A(A("192.0.2.80".parse().unwrap())),
    );
    z
}

/// Serves the zone on a loopback UDP port; `servfail.test` answers
/// SERVFAIL, `refused.test` REFUSED, `silent.test` nothing.
async fn serve() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let zone = zone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = query.queries.first().cloned() else {
                continue;
            };
            let qname = q.name().to_ascii().to_ascii_lowercase();
            if qname == "silent.test." {
                continue;
            }
            let mut reply = Message::new(
                query.metadata.id,
                MessageType::Response,
                query.metadata.op_code,
            );
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.add_query(q.clone());
            let code = match qname.as_str() {
                "servfail.test." => ResponseCode::ServFail,
                "refused.test." => ResponseCode::Refused,
                _ => match zone.get(&(qname.clone(), q.query_type())) {
                    Some(records) => {
                        for d in records {
                            reply.add_answer(Record::from_rdata(q.name().clone(), 300, d.clone()));
                        }
                        ResponseCode::NoError
                    }
                    None => {
                        let exists = zone.keys().any(|(n, _)| *n == qname);
                        let soa =
                            SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 60, 60);
                        reply.add_authority(Record::from_rdata(name("test."), 60, RData::SOA(soa)));
                        if exists {
                            ResponseCode::NoError
                        } else {
                            ResponseCode::NXDomain
                        }
                    }
                },
            };
            reply.metadata.response_code = code;
            let bytes = reply.to_vec().unwrap();
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn answers_are_sorted_for_mail_decisions() {
    let server = serve().await;
    let dns =
        HickoryResolver::with_servers_and_timeout(&[server], Duration::from_millis(300)).unwrap();

    let mut mx = dns.lookup_mx("Example.TEST").await.into_records().unwrap();
    mx.sort_by_key(|m| m.preference);
    assert_eq!(
        mx,
        [
            MxRecord::new(10, "mx1.example.test"),
            MxRecord::new(20, "mx2.example.test")
        ]
    );
    assert_eq!(
        dns.lookup_a("mx1.example.test.").await,
        DnsAnswer::Found(vec!["192.0.2.25".parse::<IpAddr>().unwrap()])
    );
    assert_eq!(
        dns.lookup_aaaa("mx1.example.test").await,
        DnsAnswer::Found(vec!["2001:db8::25".parse::<IpAddr>().unwrap()])
    );
    // A null MX (RFC 7505) comes back as "." for the caller to recognise.
    let null = dns.lookup_mx("nomail.test").await.into_records().unwrap();
    assert!(MxRecord::is_null_mx(&null), "{null:?}");
    // TXT strings are joined, as for DNSBL explanations.
    assert_eq!(
        dns.lookup_txt("2.0.0.127.bl.test").await,
        DnsAnswer::Found(vec!["listed, see https://bl.test/".to_string()])
    );
    assert_eq!(
        dns.lookup_ptr("192.0.2.25".parse().unwrap()).await,
        DnsAnswer::Found(vec!["mx1.example.test".to_string()])
    );
    assert_eq!(
        dns.lookup_ns("example.test").await,
        DnsAnswer::Found(vec!["ns.example.test".to_string()])
    );

    // The negative answers stay apart: no such name, and a name without MX
    // (whose mail goes to its address records).
    assert_eq!(dns.lookup_mx("nowhere.test").await, DnsAnswer::NxDomain);
    assert_eq!(dns.lookup_mx("addressonly.test").await, DnsAnswer::NoData);
    assert_eq!(
        dns.lookup_ptr("192.0.2.99".parse().unwrap()).await,
        DnsAnswer::NxDomain
    );

    // Server failures and silence are temporary: never a reason to reject.
    assert!(dns.lookup_mx("servfail.test").await.is_temporary());
    assert!(dns.lookup_a("refused.test").await.is_temporary());
    assert!(dns.lookup_a("silent.test").await.is_temporary());
    // A name that cannot be a DNS name is a permanent failure.
    assert!(matches!(
        dns.lookup_a("bad..name").await,
        DnsAnswer::PermFail(_)
    ));
}

#[tokio::test]
async fn no_server_is_a_temporary_failure() {
    // A port nothing listens on.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    let dns =
        HickoryResolver::with_servers_and_timeout(&[addr], Duration::from_millis(200)).unwrap();
    assert!(dns.lookup_mx("example.test").await.is_temporary());
}
