//! Secrets never reach the logs or `Debug` output.
//!
//! This file holds its own test binary so the process-wide tracing subscriber that captures
//! the logs is installed exactly once, and no other test's requests mix into the buffer.

use aero_shared::auth::api_key::ApiKey;
use aero_tests::{OWNER, OWNER_PASSWORD, TestCentral, TestEdge, expect_status, wait_until};
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Everything every tracing event of this process writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn captured_logs() -> &'static LogBuffer {
    static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = LogBuffer::default();
        tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .init();
        buffer
    })
}

#[tokio::test]
async fn logs_never_contain_passwords_api_keys_or_tokens() {
    let logs = captured_logs();
    let central = TestCentral::start().await;

    // A successful login, and a failed one with a different password.
    let token = central.owner_token().await;
    let wrong_password = "wrong-but-secret-password-42";
    let response = central
        .request(Method::POST, "/v1/auth/login")
        .json(&json!({ "username": OWNER, "password": wrong_password }))
        .send()
        .await
        .unwrap();
    expect_status(response, 401).await;

    // A device creation, and a request made with its key.
    let site = central.create_site(&token, "Leeds").await;
    let (device, api_key) = central.create_device(&token, site, "kiosk").await;
    let response = central
        .request(Method::GET, "/v1/products")
        .header("X-Api-Key", &api_key)
        .send()
        .await
        .unwrap();
    expect_status(response, 200).await;

    // A request the key may not make, and one after revocation: error paths log too.
    let response = central
        .request(Method::GET, "/v1/sites")
        .header("X-Api-Key", &api_key)
        .send()
        .await
        .unwrap();
    expect_status(response, 403).await;
    let response = central
        .request(Method::DELETE, &format!("/v1/devices/{device}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_status(response, 204).await;
    let response = central
        .request(Method::GET, "/v1/products")
        .header("X-Api-Key", &api_key)
        .send()
        .await
        .unwrap();
    expect_status(response, 401).await;

    // Browsers open the venue's live feed with their credential in the query string.
    let enrollment = central.enrollment_token(&token, site).await;
    let edge = TestEdge::start(&central, &enrollment).await;
    let (_, scoreboard_key) = central.create_device(&token, site, "scoreboard").await;
    wait_until(
        "the scoreboard key at the edge",
        Duration::from_secs(20),
        || async { edge.status(&scoreboard_key).await.is_some() },
    )
    .await;
    let query_key = format!("?api_key={scoreboard_key}&since=0");
    assert_eq!(open_live(edge.addr, &query_key).await, 101);
    // Central's token is not valid at the edge: refused, and not logged either.
    assert_eq!(
        open_live(edge.addr, &format!("?access_token={token}")).await,
        401
    );

    let text = logs.contents();
    assert!(
        text.contains("/v1/live"),
        "live feed requests were not captured:\n{text}"
    );
    // The capture works: the server's own events are in it.
    assert!(
        text.contains("failed login"),
        "nothing was captured:\n{text}"
    );
    assert!(
        text.contains("/v1/products"),
        "request spans were not captured:\n{text}"
    );

    let jwt_signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("the owner's password", OWNER_PASSWORD),
        ("a failed login's password", wrong_password),
        ("the API key", api_key.as_str()),
        ("a key passed in the query", scoreboard_key.as_str()),
        ("the JWT", token.as_str()),
        ("the JWT's signature", jwt_signature),
    ] {
        assert!(!text.contains(secret), "the logs contain {what}:\n{text}");
    }
}

/// Opens `GET /v1/live{query}` as a browser would (no headers but the handshake's), with a
/// hand-written handshake so no client library traces the request line into the capture;
/// returns the answer's status.
async fn open_live(addr: std::net::SocketAddr, query: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/live{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn debug_output_hides_api_keys_and_settings_secrets() {
    let key = ApiKey::generate();
    let shown = format!("{key:?}");
    assert!(!shown.contains(key.expose()), "{shown}");
    assert!(!shown.contains(&key.expose()["aero_".len()..]), "{shown}");

    let jwt_secret = "jwt-signing-secret-that-must-not-show";
    let db_password = "Db-Pa55word-must-not-show";
    let settings = aero_central::config::Settings {
        jwt_secret: Some(jwt_secret.to_string().into()),
        database_url: Some(
            format!("server=tcp:db,1433;user=aero;password={db_password};database=aero").into(),
        ),
        ..Default::default()
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains(jwt_secret), "{shown}");
    assert!(!shown.contains(db_password), "{shown}");
    let shown = format!("{settings:#?}");
    assert!(!shown.contains(jwt_secret), "{shown}");
    assert!(!shown.contains(db_password), "{shown}");
}
