//! A DNS server on loopback UDP for membership tests, built with
//! hickory-proto: it answers SRV queries with the current members and A
//! queries with the current address of each host, both changeable while
//! memgate runs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    /// SRV name (lower case, with the trailing dot) → (target, port).
    srv: HashMap<String, Vec<(String, u16)>>,
    /// Host name (lower case, with the trailing dot) → address.
    a: HashMap<String, Ipv4Addr>,
}

/// The server; it stops when dropped.
pub struct Dns {
    /// Where it answers.
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    /// Starts an empty server.
    pub async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let current = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.message_type = MessageType::Response;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                reply.queries = query.queries.clone();
                if let Some(q) = query.queries.first() {
                    let name = q.name().clone();
                    let key = name.to_ascii().to_ascii_lowercase();
                    let zone = current.lock().unwrap();
                    match q.query_type() {
                        RecordType::SRV => match zone.srv.get(&key) {
                            Some(records) => {
                                for (target, port) in records {
                                    let target = Name::from_ascii(target).unwrap();
                                    let srv = SRV::new(0, 10, *port, target);
                                    reply.add_answer(Record::from_rdata(
                                        name.clone(),
                                        0,
                                        RData::SRV(srv),
                                    ));
                                }
                            }
                            None => reply.metadata.response_code = ResponseCode::NXDomain,
                        },
                        RecordType::A => match zone.a.get(&key) {
                            Some(ip) => {
                                reply.add_answer(Record::from_rdata(
                                    name.clone(),
                                    0,
                                    RData::A(A(*ip)),
                                ));
                            }
                            None => reply.metadata.response_code = ResponseCode::NXDomain,
                        },
                        // No AAAA or anything else: an empty answer.
                        _ => {}
                    }
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
            }
        });
        Dns { addr, zone, task }
    }

    /// Sets the SRV records of `name` (with its trailing dot).
    pub fn set_srv(&self, name: &str, records: &[(&str, u16)]) {
        self.zone.lock().unwrap().srv.insert(
            name.to_ascii_lowercase(),
            records.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        );
    }

    /// Points `host` (with its trailing dot) at `ip`.
    pub fn set_a(&self, host: &str, ip: Ipv4Addr) {
        self.zone
            .lock()
            .unwrap()
            .a
            .insert(host.to_ascii_lowercase(), ip);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
