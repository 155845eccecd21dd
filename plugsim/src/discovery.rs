//! The simulated plug's side of UDP discovery: a `get_sysinfo` datagram, encrypted and without
//! the TCP length header, answered from the plug's own UDP port with its sysinfo, encrypted the
//! same way.

use crate::Shared;
use aero_edge::plugs::kasa::codec;
use serde_json::Value;
use std::io;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Answers discovery on `socket` for as long as the plug lives. Datagrams that are not a
/// sysinfo request get no answer, and neither does anything while the plug is offline
/// (rebooting, or its port closed): a real plug in those states is silent too.
pub(crate) async fn answer(socket: UdpSocket, shared: Arc<Shared>) {
    let mut datagram = vec![0u8; codec::MAX_FRAME];
    loop {
        let (len, from) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            // An earlier answer's peer was gone; the socket itself is fine.
            Err(err) if is_about_one_peer(&err) => continue,
            Err(err) => {
                eprintln!("simulated plug: discovery socket failed: {err}");
                return;
            }
        };
        if !shared.is_online() || !asks_for_sysinfo(&datagram[..len]) {
            continue;
        }
        let reply = codec::encrypt(shared.sysinfo_reply().to_string().as_bytes());
        let _ = socket.send_to(&reply, from).await;
    }
}

fn asks_for_sysinfo(datagram: &[u8]) -> bool {
    serde_json::from_slice::<Value>(&codec::decrypt(datagram))
        .is_ok_and(|request| request.pointer("/system/get_sysinfo").is_some())
}

fn is_about_one_peer(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_encrypted_sysinfo_request_is_answered() {
        let request = br#"{"system":{"get_sysinfo":{}}}"#;
        assert!(asks_for_sysinfo(&codec::encrypt(request)));
        assert!(!asks_for_sysinfo(request));
        assert!(!asks_for_sysinfo(&codec::frame(request)));
        assert!(!asks_for_sysinfo(&codec::encrypt(
            br#"{"system":{"set_relay_state":{"state":1}}}"#
        )));
        assert!(!asks_for_sysinfo(&[]));
    }
}
