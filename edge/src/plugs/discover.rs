//! Finding Kasa plugs on a LAN for ops: one encrypted `get_sysinfo` datagram to each address
//! given (a subnet's broadcast address, or single plugs), every device that answers within the
//! wait listed once, and the table ops read. Nothing here chooses an address by itself.

use super::kasa::commands::{self, SysInfo};
use super::kasa::{DEFAULT_PORT, codec};
use serde_json::json;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How long replies are collected unless told otherwise: a plug answers within milliseconds,
/// but on a busy Wi-Fi segment some answers take a second or two.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

/// The most devices one discovery collects: far more plugs than a venue has, and a bound on
/// what a LAN full of answering devices can make us hold.
pub const MAX_DEVICES: usize = 1024;

/// The largest reply read whole. A six-outlet strip's sysinfo is about 2 KiB; a longer datagram
/// is cut to this, fails to parse and is ignored.
const MAX_DATAGRAM: usize = codec::MAX_FRAME;

/// A device that answered discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where the answer came from: the plug's address on the LAN.
    pub addr: SocketAddr,
    pub alias: String,
    pub model: String,
    pub device_id: String,
    /// A strip's outlets as (full child id, alias), in the strip's order; empty for a plain
    /// plug. The child id is what HQ takes as a plug's `child_id`.
    pub children: Vec<(String, String)>,
    /// The relay of a plain plug; `None` for a strip, whose outlets each have their own.
    pub relay_on: Option<bool>,
}

impl Found {
    fn new(addr: SocketAddr, info: SysInfo) -> Self {
        Self {
            addr,
            alias: info.alias,
            model: info.model,
            device_id: info.device_id,
            children: info
                .outlets
                .into_iter()
                .map(|outlet| (outlet.id, outlet.alias))
                .collect(),
            relay_on: info.relay_on,
        }
    }
}

/// Why discovery could not run. Replies that are not the protocol are no error: they are
/// skipped.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no address to send discovery to")]
    NoTarget,
    /// One socket speaks one address family.
    #[error("discovery targets mix IPv4 and IPv6 ({0} and {1}): ask each family on its own")]
    MixedFamilies(SocketAddr, SocketAddr),
    #[error("could not open a UDP socket for discovery: {0}")]
    Socket(#[source] io::Error),
    /// Typically no route to the address: the edge is not on that LAN, or the broadcast address
    /// belongs to another subnet.
    #[error("could not send discovery to {target}: {source}")]
    Send {
        target: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("receiving discovery replies failed: {0}")]
    Receive(#[source] io::Error),
}

/// Sends discovery to `target` (a broadcast address reaches every plug of its subnet) and
/// returns the devices that answered within `wait`, at most [`MAX_DEVICES`].
pub async fn discover(target: SocketAddr, wait: Duration) -> Result<Vec<Found>, DiscoverError> {
    discover_at(&[target], wait, MAX_DEVICES).await
}

/// Sends discovery to every address of `targets` and returns the devices that answered, one
/// per answering address, ordered by address. Returns after `wait` (counted from the call), or
/// as soon as `limit` devices have answered.
pub async fn discover_at(
    targets: &[SocketAddr],
    wait: Duration,
    limit: usize,
) -> Result<Vec<Found>, DiscoverError> {
    let deadline = Instant::now() + wait;
    let socket = bind_for(targets)?;
    let request = request_datagram();
    for &target in targets {
        socket
            .send_to(&request, target)
            .await
            .map_err(|source| DiscoverError::Send { target, source })?;
    }
    let mut found = BTreeMap::new();
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    while found.len() < limit {
        let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut datagram)).await
        else {
            break;
        };
        let (len, from) = match received {
            Ok(received) => received,
            // An ICMP error for one target, reported on the socket: that target is silent, the
            // others may still answer.
            Err(err) if is_about_one_target(&err) => continue,
            Err(err) => return Err(DiscoverError::Receive(err)),
        };
        if found.contains_key(&from) {
            continue;
        }
        if let Some(info) = parse_reply(&datagram[..len]) {
            found.insert(from, Found::new(from, info));
        }
    }
    Ok(found.into_values().collect())
}

/// The datagram plugs answer: `system.get_sysinfo`, encrypted, and without the length header
/// that TCP frames carry, since a datagram has its own length.
pub fn request_datagram() -> Vec<u8> {
    let request = commands::request("system", "get_sysinfo", json!({}), &[]);
    codec::encrypt(request.to_string().as_bytes())
}

/// The device a reply datagram describes, or `None` when it is not a successful sysinfo reply
/// of this protocol.
pub fn parse_reply(datagram: &[u8]) -> Option<SysInfo> {
    let reply: serde_json::Value = serde_json::from_slice(&codec::decrypt(datagram)).ok()?;
    let body = commands::command_reply(&reply, "system", "get_sysinfo").ok()?;
    commands::parse_sysinfo(body).ok()
}

/// A socket on an ephemeral port of the targets' family. Broadcast is allowed on it because a
/// broadcast address is what ops normally give; without the flag the kernel refuses the send.
fn bind_for(targets: &[SocketAddr]) -> Result<UdpSocket, DiscoverError> {
    let first = *targets.first().ok_or(DiscoverError::NoTarget)?;
    if let Some(other) = targets.iter().find(|t| t.is_ipv4() != first.is_ipv4()) {
        return Err(DiscoverError::MixedFamilies(first, *other));
    }
    let local: SocketAddr = if first.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local).map_err(DiscoverError::Socket)?;
    if first.is_ipv4() {
        socket.set_broadcast(true).map_err(DiscoverError::Socket)?;
    }
    socket
        .set_nonblocking(true)
        .map_err(DiscoverError::Socket)?;
    UdpSocket::from_std(socket).map_err(DiscoverError::Socket)
}

fn is_about_one_target(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// What ops read: one row per device, and under a strip one row per outlet, whose child id is
/// what HQ takes as `child_id`.
pub fn table(found: &[Found]) -> String {
    let mut rows = Vec::new();
    for device in found {
        rows.push(vec![
            device.addr.to_string(),
            printable(&device.model),
            printable(&device.alias),
            printable(&device.device_id),
        ]);
        for (index, (child_id, alias)) in device.children.iter().enumerate() {
            rows.push(vec![
                format!("  outlet {}", index + 1),
                String::new(),
                printable(alias),
                printable(child_id),
            ]);
        }
    }
    aero_shared::table::render(
        &["ADDRESS", "MODEL", "ALIAS", "DEVICE ID / CHILD ID"],
        &rows,
    )
}

/// One line telling ops how to add a plug at HQ, with the first device found (its first outlet,
/// for a strip) as the example body.
pub fn hq_hint(found: &[Found]) -> String {
    let (name, host, child_id) = match found.first() {
        Some(device) => match device.children.first() {
            Some((child_id, alias)) => (
                printable(alias),
                device.addr.ip().to_string(),
                Some(printable(child_id)),
            ),
            None => (printable(&device.alias), device.addr.ip().to_string(), None),
        },
        None => ("Lobby lamp".to_owned(), "192.168.1.23".to_owned(), None),
    };
    let body = format!(
        r#"{{"name":{},"host":{},"port":{DEFAULT_PORT},"child_id":{}}}"#,
        json!(name),
        json!(host),
        json!(child_id),
    );
    format!(
        "add one at HQ: POST /v1/sites/{{site_id}}/plugs {body} \
         (child_id: a strip outlet's CHILD ID, null for a plain plug)"
    )
}

/// `text` without control characters: aliases come from whatever answered on the LAN, and an
/// escape sequence in one must not drive the operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const STRIP_ID: &str = "8006A0B1C2D3E4F5000000000000000000000007";

    fn strip_reply() -> Value {
        json!({"system": {"get_sysinfo": {
            "alias": "Arcade strip", "model": "HS300(US)", "deviceId": STRIP_ID,
            "feature": "TIM:ENE", "err_code": 0,
            "children": [
                {"id": format!("{STRIP_ID}00"), "state": 1, "alias": "Claw"},
                {"id": "01", "state": 0, "alias": "Hoops"},
            ]
        }}})
    }

    fn encrypted(value: &Value) -> Vec<u8> {
        codec::encrypt(value.to_string().as_bytes())
    }

    fn found_plug() -> Found {
        Found {
            addr: "192.168.1.23:9999".parse().unwrap(),
            alias: "Lobby lamp".into(),
            model: "HS103(US)".into(),
            device_id: "8006AAAA".into(),
            children: vec![],
            relay_on: Some(true),
        }
    }

    fn found_strip() -> Found {
        Found {
            addr: "192.168.1.24:9999".parse().unwrap(),
            alias: "Arcade strip".into(),
            model: "HS300(US)".into(),
            device_id: STRIP_ID.into(),
            children: vec![
                (format!("{STRIP_ID}00"), "Claw".into()),
                (format!("{STRIP_ID}01"), "Hoops".into()),
            ],
            relay_on: None,
        }
    }

    #[test]
    fn the_request_is_the_encrypted_sysinfo_command_without_a_length_header() {
        let datagram = request_datagram();
        let plain = br#"{"system":{"get_sysinfo":{}}}"#;
        assert_eq!(datagram.len(), plain.len());
        assert_eq!(datagram, codec::encrypt(plain));
        // The first cipher bytes of this request, as every Kasa client sends them.
        assert_eq!(&datagram[..4], &[0xd0, 0xf2, 0x81, 0xf8]);
    }

    #[test]
    fn a_strip_reply_parses_to_its_outlets_by_full_child_id() {
        let info = parse_reply(&encrypted(&strip_reply())).expect("a strip's reply");
        let found = Found::new("10.0.0.5:9999".parse().unwrap(), info);
        assert_eq!(found.model, "HS300(US)");
        assert_eq!(found.alias, "Arcade strip");
        assert_eq!(found.device_id, STRIP_ID);
        assert_eq!(found.relay_on, None);
        assert_eq!(
            found.children,
            [
                (format!("{STRIP_ID}00"), "Claw".to_owned()),
                (format!("{STRIP_ID}01"), "Hoops".to_owned()),
            ]
        );
    }

    #[test]
    fn datagrams_that_are_not_a_sysinfo_reply_parse_to_nothing() {
        let good = encrypted(&strip_reply());
        let mut framed = codec::frame(strip_reply().to_string().as_bytes());
        let noise: Vec<u8> = (0u32..512)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let garbage: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0xff; 100],
            noise,
            strip_reply().to_string().into_bytes(),
            std::mem::take(&mut framed),
            encrypted(&json!({"system": {"get_sysinfo": {"err_code": -1, "err_msg": "busy"}}})),
            encrypted(&json!({"system": {"get_sysinfo": {"alias": "no id", "relay_state": 1}}})),
            encrypted(&json!({"system": {"set_relay_state": {"err_code": 0}}})),
            encrypted(&json!([1, 2, 3])),
            codec::encrypt(&b"[".repeat(100_000)),
            codec::encrypt(b"{\"system\":\xff\xfe}"),
            good[1..].to_vec(),
        ];
        for datagram in &garbage {
            assert_eq!(parse_reply(datagram), None, "parsed {datagram:?}");
        }
        for cut in 0..good.len() {
            assert_eq!(parse_reply(&good[..cut]), None, "cut at {cut}");
        }
        assert!(parse_reply(&good).is_some());
    }

    #[tokio::test]
    async fn targets_of_both_families_or_none_are_refused_before_sending() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert!(matches!(
            discover_at(&[v4, v6], DEFAULT_WAIT, MAX_DEVICES).await,
            Err(DiscoverError::MixedFamilies(a, b)) if a == v4 && b == v6
        ));
        assert!(matches!(
            discover_at(&[], DEFAULT_WAIT, MAX_DEVICES).await,
            Err(DiscoverError::NoTarget)
        ));
    }

    #[test]
    fn the_table_lists_each_strip_outlet_under_its_strip() {
        let text = table(&[found_plug(), found_strip()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("ADDRESS"));
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[1]),
            [
                "192.168.1.23:9999",
                "HS103(US)",
                "Lobby",
                "lamp",
                "8006AAAA"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "192.168.1.24:9999",
                "HS300(US)",
                "Arcade",
                "strip",
                STRIP_ID
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["outlet", "1", "Claw", &format!("{STRIP_ID}00")]
        );
        assert_eq!(
            cells(lines[4]),
            ["outlet", "2", "Hoops", &format!("{STRIP_ID}01")]
        );
        // Columns line up: every id starts where the header's last column does.
        let column = lines[0].find("DEVICE ID").unwrap();
        for line in &lines[1..] {
            assert_eq!(line.find("8006"), Some(column), "{text}");
        }
    }

    #[test]
    fn control_characters_from_the_lan_never_reach_the_terminal() {
        let mut plug = found_plug();
        plug.alias = "Lobby\u{1b}[2J\u{7}\u{9b}lamp\r\n".into();
        plug.children = vec![("01\u{1b}]0;x\u{7}".into(), "\u{1b}c".into())];
        for text in [table(&[plug.clone()]), hq_hint(&[plug])] {
            for line in text.lines() {
                assert!(!line.chars().any(char::is_control), "{text:?}");
            }
        }
    }

    #[test]
    fn the_hint_shows_the_body_hq_takes_for_the_first_device() {
        let body = |hint: &str| -> Value {
            let start = hint.find("plugs {").unwrap() + "plugs ".len();
            let end = hint.rfind('}').unwrap();
            serde_json::from_str(&hint[start..=end]).expect("a JSON body")
        };
        let hint = hq_hint(&[found_plug(), found_strip()]);
        assert!(hint.contains("POST /v1/sites/{site_id}/plugs"), "{hint}");
        assert_eq!(
            body(&hint),
            json!({"name": "Lobby lamp", "host": "192.168.1.23", "port": 9999, "child_id": null})
        );
        assert_eq!(
            body(&hq_hint(&[found_strip()])),
            json!({
                "name": "Claw", "host": "192.168.1.24", "port": 9999,
                "child_id": format!("{STRIP_ID}00")
            })
        );
        assert_eq!(hq_hint(&[]).lines().count(), 1);
    }
}
