//! A DNS server on loopback UDP for tests: answers A, AAAA, MX and NS for the names it is
//! given, NXDOMAIN for every other name, SERVFAIL or silence for names set up that way.
#![allow(clippy::disallowed_methods)] // a test server runs its own task

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_resolver::proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        rdata::{A, AAAA, MX, NS},
        Name, RData, Record, RecordType,
    },
};

/// How a name answers.
#[derive(Debug, Clone)]
pub enum FakeName {
    Records {
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
        mx: Vec<String>,
        ns: Vec<String>,
    },
    ServFail,
    /// Never answers (a timeout for the asker).
    Silent,
}

impl FakeName {
    pub fn a(ip: Ipv4Addr) -> Self {
        FakeName::Records { a: vec![ip], aaaa: Vec::new(), mx: Vec::new(), ns: Vec::new() }
    }
}

pub struct FakeDns {
    pub addr: SocketAddr,
    names: Arc<Mutex<HashMap<String, FakeName>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, names: &HashMap<String, FakeName>) -> Option<Message> {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    for q in &query.queries {
        reply.add_query(q.clone());
        let name = q.name().to_ascii().trim_end_matches('.').to_lowercase();
        match names.get(&name) {
            None => reply.metadata.response_code = ResponseCode::NXDomain,
            Some(FakeName::ServFail) => reply.metadata.response_code = ResponseCode::ServFail,
            Some(FakeName::Silent) => return None,
            Some(FakeName::Records { a, aaaa, mx, ns }) => {
                let owner = q.name().clone();
                let record = |data: RData| Record::from_rdata(owner.clone(), 60, data);
                let parse = |host: &String| Name::from_ascii(format!("{host}.")).ok();
                let records: Vec<Record> = match q.query_type() {
                    RecordType::A => a.iter().map(|ip| record(RData::A(A(*ip)))).collect(),
                    RecordType::AAAA => aaaa.iter().map(|ip| record(RData::AAAA(AAAA(*ip)))).collect(),
                    RecordType::MX => {
                        mx.iter().filter_map(parse).map(|host| record(RData::MX(MX::new(10, host)))).collect()
                    }
                    RecordType::NS => ns.iter().filter_map(parse).map(|host| record(RData::NS(NS(host)))).collect(),
                    _ => Vec::new(),
                };
                reply.add_answers(records);
            }
        }
    }
    Some(reply)
}

impl FakeDns {
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake DNS server");
        let addr = socket.local_addr().expect("its address");
        let names: Arc<Mutex<HashMap<String, FakeName>>> = Arc::default();
        let shared = names.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buffer).await else { continue };
                let Ok(query) = Message::from_vec(&buffer[..len]) else { continue };
                let reply = answer(&query, &shared.lock().unwrap());
                if let Some(bytes) = reply.and_then(|r| r.to_vec().ok()) {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, names, task }
    }

    pub fn set(&self, name: &str, entry: FakeName) {
        self.names.lock().unwrap().insert(name.trim_end_matches('.').to_lowercase(), entry);
    }
}
