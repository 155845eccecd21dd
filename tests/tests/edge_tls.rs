//! The edge over HTTPS with a certificate made here: device keys answered over TLS, plain HTTP
//! to the TLS port refused, and TLS files that cannot be used stopping the edge at startup (and
//! failing `check`) with the file named.

use aero_shared::clock::SystemClock;
use aero_shared::server::tls::TlsSettings;
use aero_tests::{TestCentral, TestEdge, wait_until};
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A self-signed certificate for the loopback address tests reach the edge at, written as PEM.
struct Pem {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Pem {
    fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("a self-signed certificate");
        let cert = dir.path().join("edge.crt");
        let key = dir.path().join("edge.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self { dir, cert, key }
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert_path: Some(self.cert.clone()),
            key_path: Some(self.key.clone()),
        }
    }

    /// Another file in the same directory, holding `text`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_https_with_its_certificate_and_refuses_plain_http() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Leeds").await;
    let token = central.enrollment_token(&owner, site).await;
    let pem = Pem::generate();
    let edge = TestEdge::start_with(&central.url(""), &token, |s| s.tls = pem.settings()).await;
    assert!(edge.url("/healthz").starts_with("https://127.0.0.1:"));

    // A device key, over HTTPS to a client that trusts the edge's certificate.
    let (_, kiosk) = central.create_device(&owner, site, "kiosk").await;
    wait_until(
        "the kiosk key at the edge",
        Duration::from_secs(20),
        || async { edge.status(&kiosk).await.is_some() },
    )
    .await;
    let response = edge
        .request(Method::GET, "/v1/status", &kiosk)
        .send()
        .await
        .expect("an HTTPS request");
    assert_eq!(response.status().as_u16(), 200);

    // Plain HTTP to the same port gets no answer: the connection fails the handshake.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let refused = plain
        .get(format!("http://{}/healthz", edge.addr))
        .header("x-api-key", &kiosk)
        .send()
        .await;
    assert!(refused.is_err(), "plain HTTP was answered: {refused:?}");

    // A client that does not trust the certificate does not talk to the edge either.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let refused = untrusting.get(edge.url("/healthz")).send().await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");
    // The edge still serves its own clients after those failed handshakes.
    let response = edge.client.get(edge.url("/healthz")).send().await;
    assert_eq!(response.expect("healthz").status().as_u16(), 200);
}

/// The message `aero-edge serve` stops with for `tls`, from the same data directory.
async fn startup_error(tls: TlsSettings) -> String {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let settings = aero_edge::config::Settings {
        data_dir: Some(data_dir.path().to_path_buf()),
        tls,
        ..aero_edge::config::Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let launched = tokio::time::timeout(
        Duration::from_secs(10),
        aero_edge::launch(settings, listener, std::future::pending()),
    )
    .await
    .expect("the edge stops at once");
    format!("{:#}", launched.expect_err("the edge refuses to start"))
}

/// The `tls` line of `aero-edge check` for a configuration file holding `config`.
async fn check_line(config_dir: &Path, config: &str) -> String {
    let path = config_dir.join("edge.toml");
    std::fs::write(&path, config).expect("write config");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let lines = aero_edge::ops::check::run_checks(
        Some(&path),
        Some(data_dir.path().to_path_buf()),
        &SystemClock,
    )
    .await;
    lines
        .iter()
        .map(ToString::to_string)
        .find(|line| line.contains(" tls "))
        .unwrap_or_else(|| panic!("no tls line in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_that_cannot_be_used_stop_the_edge_naming_the_file() {
    let pem = Pem::generate();
    let other = Pem::generate();

    let missing = pem.dir.path().join("missing.crt");
    let message = startup_error(TlsSettings {
        cert_path: Some(missing.clone()),
        key_path: Some(pem.key.clone()),
    })
    .await;
    assert!(
        message.contains(&format!(
            "cannot read TLS certificate file {}",
            missing.display()
        )),
        "{message}"
    );

    let garbage = pem.file("garbage.key", "not a key\n");
    let message = startup_error(TlsSettings {
        cert_path: Some(pem.cert.clone()),
        key_path: Some(garbage.clone()),
    })
    .await;
    assert!(
        message.contains(&format!(
            "TLS key file {} holds no usable private key",
            garbage.display()
        )),
        "{message}"
    );

    let no_cert = pem.file("empty.crt", "");
    let message = startup_error(TlsSettings {
        cert_path: Some(no_cert.clone()),
        key_path: Some(pem.key.clone()),
    })
    .await;
    assert!(
        message.contains(&format!(
            "TLS certificate file {} holds no PEM certificate",
            no_cert.display()
        )),
        "{message}"
    );

    // Another certificate's key.
    let message = startup_error(TlsSettings {
        cert_path: Some(pem.cert.clone()),
        key_path: Some(other.key.clone()),
    })
    .await;
    assert!(
        message.contains(&format!(
            "TLS key {} does not go with certificate {}",
            other.key.display(),
            pem.cert.display()
        )),
        "{message}"
    );

    // `aero-edge check` reports the same, and passes a usable pair.
    let line = check_line(
        pem.dir.path(),
        &format!(
            "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
            pem.cert, other.key
        ),
    )
    .await;
    assert!(
        line.starts_with("FAIL  tls") && line.contains("does not go with certificate"),
        "{line}"
    );
    let line = check_line(
        pem.dir.path(),
        &format!(
            "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
            pem.cert, pem.key
        ),
    )
    .await;
    assert!(line.starts_with("ok    tls"), "{line}");
}
