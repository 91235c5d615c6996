//! Tries to open sockets (TCP connect, TCP listen, UDP bind, DNS).
//! Input `addr`: where to connect (a server the test keeps listening).
//! `contained` when every attempt fails, `escaped` otherwise.

use runbook_sdk::{Attempts, Error, Inputs, Outcome, Pair, RunContext, Step};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

struct EscapeNet;

impl Step for EscapeNet {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let addr = inputs.opt("addr").unwrap_or("127.0.0.1:6379");
        let mut tries = Attempts::new("socket");
        tries.note(&format!("connect {addr}"), TcpStream::connect(addr));
        tries.note("listen 127.0.0.1:0", TcpListener::bind("127.0.0.1:0"));
        tries.note("udp bind 127.0.0.1:0", UdpSocket::bind("127.0.0.1:0"));
        tries.note("resolve localhost", "localhost:80".to_socket_addrs());
        tries.finish()
    }
}

runbook_sdk::export_step!(EscapeNet);
