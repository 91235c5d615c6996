//! Tries to open sockets (TCP connect, TCP listen, UDP bind, DNS).
//! Input `addr`: where to connect (a server the test keeps listening).
//! `contained` when every attempt fails, `escaped` otherwise.

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, outcome};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

struct EscapeNet;

impl Step for EscapeNet {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let addr = inputs.opt("addr").unwrap_or("127.0.0.1:6379");
        let mut escaped = Vec::new();
        let mut errors = Vec::new();
        let mut note = |what: &str, r: std::io::Result<()>| match r {
            Ok(()) => escaped.push(what.to_string()),
            Err(e) => errors.push(format!("{what}: {e}")),
        };
        note(
            &format!("connect {addr}"),
            TcpStream::connect(addr).map(drop),
        );
        note(
            "listen 127.0.0.1:0",
            TcpListener::bind("127.0.0.1:0").map(drop),
        );
        note(
            "udp bind 127.0.0.1:0",
            UdpSocket::bind("127.0.0.1:0").map(drop),
        );
        note(
            "resolve localhost",
            "localhost:80".to_socket_addrs().map(drop),
        );
        let label = if escaped.is_empty() {
            "contained"
        } else {
            "escaped"
        };
        outcome(label)
            .fact("escaped", escaped.join("; "))
            .fact("errors", errors.join("; "))
            .summary(format!(
                "{} socket attempts failed, {} succeeded",
                errors.len(),
                escaped.len()
            ))
    }
}

runbook_sdk::export_step!(EscapeNet);
