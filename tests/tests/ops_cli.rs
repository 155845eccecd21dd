//! The ops commands through the real binaries: `aero-edge status` and `check` beside a running
//! and a stopped daemon, `aero-central sites` and `devices --site` over a live store, and the
//! initial pull's progress lines when `enroll` runs outside a terminal.

use aero_central::store::Actor;
use aero_edge::ops::status::{EXIT_DEGRADED, EXIT_HEALTHY, EXIT_NOT_RUNNING, StatusReport};
use aero_shared::wire::{ProductKind, ProductRecord};
use aero_tests::process::{self, EdgeProcess, central_binary, edge_binary};
use aero_tests::{TestCentral, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use uuid::Uuid;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn edge_status(data_dir: &Path) -> (i32, StatusReport, Value) {
    let output = process::run(&edge_binary(), data_dir, &["status", "--json"], "warn").await;
    let code = output.status.code().expect("exit code");
    let text = stdout(&output);
    let raw: Value = serde_json::from_str(&text).unwrap_or_else(|err| {
        panic!(
            "status --json is not JSON ({err}): {text}{}",
            stderr(&output)
        )
    });
    let report: StatusReport = serde_json::from_value(raw.clone()).expect("documented fields");
    (code, report, raw)
}

async fn edge_table(data_dir: &Path) -> (i32, String) {
    let output = process::run(&edge_binary(), data_dir, &["status"], "warn").await;
    (output.status.code().expect("exit code"), stdout(&output))
}

/// The line of a `label  value` table that starts with `label`.
fn row<'a>(table: &'a str, label: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{label}  ")))
        .unwrap_or_else(|| panic!("no {label:?} row in:\n{table}"))
}

/// A central with one site, a tablet key for it, and an edge enrolled (not serving) on `dir`.
async fn enrolled_edge(dir: &Path) -> (TestCentral, Uuid, String) {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Statusville").await;
    let (_, tablet) = central.create_device(&owner, site, "tablet").await;
    let token = central.enrollment_token(&owner, site).await;
    process::enroll(dir, &central.url(""), &token).await;
    (central, site, tablet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_running_daemon_then_the_data_dir_once_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let (mut central, site, tablet) = enrolled_edge(&data_dir).await;
    let mut edge = EdgeProcess::serve(&data_dir, &dir.path().join("edge.log")).await;

    // Running and online: healthy, exit 0, the pid of the daemon.
    wait_until(
        "the daemon to report online",
        Duration::from_secs(20),
        || {
            let data_dir = data_dir.clone();
            async move { edge_status(&data_dir).await.1.sync.online }
        },
    )
    .await;
    let (code, report, raw) = edge_status(&data_dir).await;
    assert_eq!(code, EXIT_HEALTHY, "{raw:#}");
    assert_eq!(report.site_id, site);
    assert_eq!(report.central_url, central.url(""));
    assert!(
        report.daemon.running && report.daemon.pid.is_some(),
        "{raw:#}"
    );
    assert!(
        report.sync.last_pull_at.is_some() && report.sync.cursor > 0,
        "{raw:#}"
    );
    for field in [
        "site_id",
        "central_url",
        "daemon",
        "checked_at",
        "online",
        "fenced",
        "pending_ops",
        "oldest_pending_age_seconds",
        "last_push_at",
        "last_pull_at",
        "cursor",
        "dead_letters",
        "last_error",
    ] {
        assert!(raw.get(field).is_some(), "no {field} in {raw:#}");
    }

    // Central goes away; the venue keeps registering customers, which wait in the outbox.
    central.stop().await;
    for n in 0..3 {
        let response = edge
            .client
            .post(edge.url("/v1/customers"))
            .header("X-Api-Key", &tablet)
            .json(&json!({
                "first_name": "Pat", "last_name": format!("Pending{n}"), "birth_date": "1990-01-01",
                "phone": format!("+4470000000{n}"), "email": format!("pat{n}@example.com"),
            }))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), 201);
    }
    wait_until(
        "the daemon to record that central is unreachable",
        Duration::from_secs(20),
        || {
            let data_dir = data_dir.clone();
            async move {
                let (_, report, _) = edge_status(&data_dir).await;
                !report.sync.online && report.sync.pending_ops == 3
            }
        },
    )
    .await;
    let (code, report, raw) = edge_status(&data_dir).await;
    assert_eq!(code, EXIT_DEGRADED, "{raw:#}");
    assert!(report.sync.oldest_pending_age_seconds.is_some(), "{raw:#}");
    assert!(report.sync.last_error.is_some(), "{raw:#}");
    let (code, table) = edge_table(&data_dir).await;
    assert_eq!(code, EXIT_DEGRADED, "{table}");
    assert!(row(&table, "daemon").contains("running (pid "), "{table}");
    assert!(row(&table, "online").ends_with("no"), "{table}");
    assert!(
        row(&table, "pending ops").contains("3 (oldest waiting "),
        "{table}"
    );
    assert!(
        row(&table, "status").contains("DEGRADED: offline"),
        "{table}"
    );

    // The daemon is stopped: the data directory still tells what it left behind.
    edge.kill();
    let (code, report, raw) = edge_status(&data_dir).await;
    assert_eq!(code, EXIT_NOT_RUNNING, "{raw:#}");
    assert!(!report.daemon.running);
    assert_eq!(report.daemon.pid, None);
    assert!(!report.sync.online);
    assert_eq!(report.sync.pending_ops, 3);
    let (code, table) = edge_table(&data_dir).await;
    assert_eq!(code, EXIT_NOT_RUNNING);
    assert!(row(&table, "daemon").ends_with("not running"), "{table}");
    assert!(
        row(&table, "online").contains("the daemon is not running"),
        "{table}"
    );
    assert!(
        row(&table, "status").contains("NOT RUNNING: start it"),
        "{table}"
    );
    assert!(
        row(&table, "pending ops").contains("3 (oldest waiting "),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_directory_without_an_edge_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = process::run(&edge_binary(), dir.path(), &["status"], "warn").await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("holds no enrolled edge"),
        "{}",
        stderr(&output)
    );
}

async fn check(data_dir: &Path) -> (i32, String) {
    let output = process::run(&edge_binary(), data_dir, &["check"], "warn").await;
    (output.status.code().expect("exit code"), stdout(&output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_a_running_central_and_names_an_unreachable_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let (mut central, site, _) = enrolled_edge(&data_dir).await;

    let (code, text) = check(&data_dir).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("ok    configuration"), "{text}");
    assert!(lines[1].starts_with("ok    data directory"), "{text}");
    // Plain HTTP works, but keys would cross the LAN in clear: a warning, not a failure.
    assert!(
        lines[2].starts_with("WARN  tls") && lines[2].contains("in clear"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("ok    enrolled") && lines[3].contains(&site.to_string()),
        "{text}"
    );
    assert!(
        lines[4].starts_with("ok    central") && lines[4].contains("/healthz answered 200"),
        "{text}"
    );
    // Central runs on this machine's clock: no skew to warn about.
    assert!(
        lines[5].starts_with("ok    clock skew") && lines[5].contains("against central"),
        "{text}"
    );

    // The enrolled URL now points at a closed loopback port.
    central.stop().await;
    let (code, text) = check(&data_dir).await;
    assert_eq!(code, 1, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  central"))
        .unwrap_or_else(|| panic!("no failed central line in:\n{text}"));
    assert!(
        line.contains(&format!("{}/healthz unreachable", central.url(""))),
        "{line}"
    );
    assert!(
        line.contains("Connection refused") || line.contains("connection refused"),
        "{line}"
    );
    assert!(
        text.lines().all(|l| !l.starts_with("ok    clock skew")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_on_a_data_directory_it_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let (_central, _, _) = enrolled_edge(&data_dir).await;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // Root writes through any mode bits: nothing can be shown then.
    let probe = data_dir.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        let _ = std::fs::remove_file(&probe);
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        eprintln!(
            "SKIPPED check_fails_on_a_data_directory_it_cannot_write: running as root, which \
             writes into a read-only directory; run the tests as an ordinary user to see it"
        );
        return;
    }
    let (code, text) = check(&data_dir).await;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(code, 1, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  data directory"))
        .unwrap_or_else(|| panic!("no failed data directory line in:\n{text}"));
    assert!(line.contains("is not writable"), "{line}");
}

/// `aero-central ARGS` on `data_dir`, which must succeed and show none of `secrets`.
async fn list(data_dir: &Path, args: &[&str], secrets: &[String]) -> String {
    let output = process::run(&central_binary(), data_dir, args, "warn").await;
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    let text = stdout(&output);
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{args:?} shows key material:\n{text}"
        );
    }
    assert!(
        !text.contains("key_hash") && !text.contains("$argon2"),
        "{text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_lists_sites_and_devices_without_key_material() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let north = central.create_site(&owner, "North Jumps").await;
    let south = central.create_site(&owner, "South Bounce").await;
    let (kiosk_id, kiosk_key) = central.create_device(&owner, north, "kiosk").await;
    let (pos_id, pos_key) = central.create_device(&owner, north, "pos").await;
    let revoke = central
        .client
        .delete(central.url(&format!("/v1/devices/{pos_id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), 204);
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let mut secrets = vec![kiosk_key, pos_key];
    for id in [kiosk_id, pos_id] {
        secrets.push(
            store
                .get_device(id)
                .await
                .expect("read")
                .expect("device")
                .key_hash,
        );
    }
    let data_dir = central.data_dir.path();

    let table = list(data_dir, &["sites"], &secrets).await;
    assert!(table.starts_with("ID "), "{table}");
    for (id, name) in [(north, "North Jumps"), (south, "South Bounce")] {
        let line = table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            line.starts_with(&id.to_string()) && line.contains("Europe/London"),
            "{line}"
        );
    }
    let json: Value =
        serde_json::from_str(&list(data_dir, &["sites", "--json"], &secrets).await).expect("json");
    let sites = json["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 2, "{json:#}");
    let listed = sites
        .iter()
        .find(|s| s["id"] == north.to_string())
        .expect("north");
    assert_eq!(listed["name"], "North Jumps");
    assert_eq!(listed["sync"]["acked_seq"], 0);

    let north_arg = north.to_string();
    let args = ["devices", "--site", north_arg.as_str()];
    let table = list(data_dir, &args, &secrets).await;
    let kiosk = table
        .lines()
        .find(|l| l.starts_with(&kiosk_id.to_string()))
        .expect("kiosk row");
    assert!(
        kiosk.contains("kiosk") && kiosk.trim_end().ends_with('-'),
        "not revoked: {kiosk}"
    );
    let pos = table
        .lines()
        .find(|l| l.starts_with(&pos_id.to_string()))
        .expect("pos row");
    assert!(!pos.trim_end().ends_with('-'), "revoked: {pos}");
    let json_args = [&args[..], &["--json"]].concat();
    let json: Value =
        serde_json::from_str(&list(data_dir, &json_args, &secrets).await).expect("json");
    let devices = json["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2, "{json:#}");
    assert!(
        devices
            .iter()
            .all(|d| d.get("key_hash").is_none() && d.get("api_key").is_none())
    );

    let unknown = process::run(
        &central_binary(),
        data_dir,
        &["devices", "--site", &Uuid::now_v7().to_string()],
        "warn",
    )
    .await;
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no site"), "{}", stderr(&unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_pulls_the_initial_replica_with_progress_lines_outside_a_terminal() {
    const PRODUCTS: usize = 3000;
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Bigchain").await;
    let store = aero_central::open_store(&central.settings())
        .await
        .expect("store");
    let actor = Actor::system("ops_cli test");
    for n in 0..PRODUCTS {
        let product = ProductRecord {
            id: Uuid::now_v7(),
            sku: format!("SKU-{n:05}"),
            name: format!("Product {n}"),
            kind: ProductKind::Addon,
            price_cents: 100,
            duration_minutes: None,
            grant: None,
            active: true,
            created_at: chrono::Utc::now(),
        };
        store
            .create_product(&actor, &product)
            .await
            .expect("product");
    }
    let token = central.enrollment_token(&owner, site).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");

    let output = process::enroll_logging(&data_dir, &central.url(""), &token, "info").await;
    let log = stderr(&output);
    // The first page is reported, then the end with every row counted.
    let first = log
        .lines()
        .find(|l| l.contains("initial pull: 1000 rows so far"))
        .unwrap_or_else(|| panic!("no first-page line in:\n{log}"));
    assert!(
        first.contains("rows/s") && first.contains("change "),
        "{first}"
    );
    let done = log
        .lines()
        .find(|l| l.contains("initial pull done: "))
        .unwrap_or_else(|| panic!("no final line in:\n{log}"));
    let rows: usize = done
        .split("initial pull done: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {done}"));
    assert!(rows > PRODUCTS, "{done}");
    assert!(
        log.contains(&format!("replica pulled ({rows} rows)")),
        "{log}"
    );
    // No terminal, no bar redrawn in place: nothing but lines.
    assert!(
        !log.contains('\r') && !log.contains("initial pull ["),
        "{log:?}"
    );

    // The replica is complete before the first start.
    let (_, report, raw) = edge_status(&data_dir).await;
    assert!(!report.daemon.running);
    assert!(
        report.sync.cursor > 0 && report.sync.last_pull_at.is_some(),
        "{raw:#}"
    );
    let db = rusqlite::Connection::open(data_dir.join("edge.db")).expect("db");
    let products: i64 = db
        .query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))
        .expect("count");
    assert_eq!(products, PRODUCTS as i64);
}
