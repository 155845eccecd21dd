//! Backups that restore, with the real `aero-edge` binary: `aero-edge backup` of a serving edge
//! under write load, `aero-edge restore` onto the stopped box, and the box syncing on with
//! nothing lost or doubled; a restore refused while the edge serves or for another venue's
//! backup; and `aero-central backup` of a running central served by a new central.

use aero_tests::process::{EdgeProcess, edge_command, enroll};
use aero_tests::{TcpProxy, TestCentral, TestEdge, expect_status, wait_settled, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn phone(n: usize) -> String {
    format!("+4479{n:08}")
}

fn registration(n: usize) -> Value {
    json!({
        "first_name": format!("Jumper{n}"),
        "last_name": "Backup",
        "birth_date": "1992-03-04",
        "phone": phone(n),
        "email": null,
    })
}

/// One acknowledged registration: when its request was sent and when the 201 arrived.
#[derive(Clone, Copy, Debug)]
struct Ack {
    n: usize,
    sent: Instant,
    acked: Instant,
}

/// Registrations from several concurrent tablets until stopped; every answer must be a 201.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(edge: &EdgeProcess, key: &str, clients: usize, next: &Arc<AtomicUsize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, acks, next) = (Arc::clone(&stop), Arc::clone(&acks), Arc::clone(next));
                let client = edge.client.clone();
                let url = edge.url("/v1/customers");
                let key = key.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let sent = Instant::now();
                        let response = client
                            .post(&url)
                            .header("x-api-key", &key)
                            .json(&registration(n))
                            .send()
                            .await
                            .expect("register");
                        expect_status(response, 201).await;
                        acks.lock().expect("acks").push(Ack {
                            n,
                            sent,
                            acked: Instant::now(),
                        });
                    }
                })
            })
            .collect();
        Self { stop, acks, tasks }
    }

    fn acked(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// Waits until `more` registrations were sent and acknowledged after `since`.
    async fn wait_for(&self, more: usize, since: Instant) {
        wait_until(
            "registrations to be acknowledged",
            Duration::from_secs(30),
            || async { self.acked().iter().filter(|a| a.sent >= since).count() >= more },
        )
        .await;
    }

    /// Stops the tablets, waits for their last requests; returns every acknowledgement.
    async fn stop(self) -> Vec<Ack> {
        let Self { stop, acks, tasks } = self;
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("a tablet saw a registration fail");
        }
        Arc::try_unwrap(acks)
            .expect("every tablet ended")
            .into_inner()
            .expect("acks")
    }
}

async fn register(edge: &EdgeProcess, key: &str, n: usize) {
    let response = edge
        .request(Method::POST, "/v1/customers", key)
        .json(&registration(n))
        .send()
        .await
        .expect("register");
    expect_status(response, 201).await;
}

fn n_of(phone: &str) -> usize {
    phone
        .strip_prefix("+4479")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("not a test phone: {phone}"))
}

/// How many customers of `site` central holds per registration number.
fn central_customers(central: &TestCentral, site: Uuid) -> BTreeMap<usize, i64> {
    let conn = rusqlite::Connection::open(central.data_dir.path().join("central.db"))
        .expect("open central.db");
    let mut stmt = conn
        .prepare("SELECT phone, COUNT(*) FROM customers WHERE home_site_id = ?1 GROUP BY phone")
        .expect("prepare");
    stmt.query_map([site], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })
    .expect("query")
    .map(|row| {
        let (phone, count) = row.expect("row");
        (n_of(&phone), count)
    })
    .collect()
}

/// The registrations an edge database file holds, and its pending ops.
fn edge_file_customers(path: &Path) -> (BTreeSet<usize>, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the edge database file");
    let phones = conn
        .prepare("SELECT phone FROM customers")
        .expect("prepare")
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|p| n_of(&p.expect("row")))
        .collect();
    let pending = conn
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("outbox");
    (phones, pending)
}

/// The file names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of a `name:  value` line of a command's report.
fn report_value(report: &str, name: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `aero-edge enroll --replace` on `data_dir` with `token`, run to completion.
async fn enroll_replacing(data_dir: &Path, central_url: &str, token: &str) -> Output {
    edge_command(
        data_dir,
        &[
            OsStr::new("enroll"),
            OsStr::new("--replace"),
            OsStr::new("--central"),
            OsStr::new(central_url),
            OsStr::new("--token"),
            OsStr::new(token),
        ],
    )
    .await
}

/// Waits until the edge has pushed everything and pulled without error.
async fn settled(edge: &EdgeProcess, key: &str) -> aero_shared::wire::EdgeStatus {
    wait_settled(|| edge.status(key)).await
}

/// A site whose box is the real `aero-edge` binary, enrolled at `central_url` (central, or a
/// proxy in front of it), serving, with a tablet key it accepts.
async fn venue_process(
    central: &TestCentral,
    owner: &str,
    name: &str,
    central_url: &str,
    dir: &Path,
) -> (Uuid, EdgeProcess, String) {
    let site = central.create_site(owner, name).await;
    let token = central.enrollment_token(owner, site).await;
    enroll(dir, central_url, &token).await;
    let (_, tablet) = central.create_device(owner, site, "tablet").await;
    let edge = EdgeProcess::serve(dir, &dir.join("edge.log")).await;
    wait_until(
        "the edge to accept the tablet",
        Duration::from_secs(20),
        || async { edge.status(&tablet).await.is_some() },
    )
    .await;
    (site, edge, tablet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_write_load_restores_to_an_edge_that_loses_and_doubles_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let proxy = TcpProxy::start(central.addr).await;
    let box_dir = tempfile::tempdir().expect("box dir");
    let backups = tempfile::tempdir().expect("backup dir");
    let backup_file = backups.path().join("edge-nightly.db");
    let (site, mut edge, tablet) =
        venue_process(&central, &owner, "Backupton", &proxy.url(), box_dir.path()).await;

    let next = Arc::new(AtomicUsize::new(0));
    let load = Load::start(&edge, &tablet, 4, &next);
    let start = Instant::now();
    load.wait_for(30, start).await;
    // The uplink goes down: from here the outbox grows, so the backup holds unsent writes.
    let cut = Instant::now();
    proxy.cut_all(Duration::from_secs(3600));
    load.wait_for(30, cut).await;

    let backup_started = Instant::now();
    let backup = edge_command(
        box_dir.path(),
        &[OsStr::new("backup"), backup_file.as_os_str()],
    )
    .await;
    let backup_finished = Instant::now();
    assert!(
        backup.status.success(),
        "aero-edge backup failed: {}",
        text(&backup.stderr)
    );
    let report = text(&backup.stdout);
    assert_eq!(
        report_value(&report, "backup"),
        backup_file.to_string_lossy()
    );
    assert_eq!(report_value(&report, "site"), site.to_string());
    let during = load
        .acked()
        .iter()
        .filter(|a| a.acked > backup_started && a.sent < backup_finished)
        .count();
    assert!(
        during > 0,
        "no registration was in flight during the backup"
    );
    load.wait_for(30, backup_finished).await;

    // The link returns: central receives everything queued, including writes the backup lacks.
    proxy.reopen();
    let mut acks = load.stop().await;
    settled(&edge, &tablet).await;
    let delivered: BTreeSet<usize> = acks.iter().map(|a| a.n).collect();
    // Down again, with nothing in flight: what is acknowledged from now on never leaves the box
    // before it dies.
    let cut_again = Instant::now();
    proxy.cut_all(Duration::from_secs(3600));
    let stranded = Load::start(&edge, &tablet, 4, &next);
    stranded.wait_for(20, cut_again).await;
    let stranded = stranded.stop().await;
    acks.extend(stranded.iter().copied());
    edge.kill();

    let at_central_before: BTreeMap<usize, i64> = central_customers(&central, site);
    let (in_backup, backup_pending) = edge_file_customers(&backup_file);
    assert_eq!(
        report_value(&report, "pending ops"),
        backup_pending.to_string()
    );
    assert!(backup_pending > 0, "the backup holds no unsent writes");
    let acked: BTreeSet<usize> = acks.iter().map(|a| a.n).collect();
    assert_eq!(
        at_central_before.keys().copied().collect::<BTreeSet<_>>(),
        delivered,
        "central did not hold exactly what the box had pushed before it died"
    );
    assert_eq!(
        acked.len(),
        acks.len(),
        "a registration number was used twice"
    );
    for ack in &acks {
        if ack.acked < backup_started {
            assert!(
                in_backup.contains(&ack.n),
                "{ack:?} was acknowledged before the backup started but is not in it"
            );
        }
        if ack.sent > backup_finished {
            assert!(
                !in_backup.contains(&ack.n),
                "{ack:?} was sent after the backup finished but is in it"
            );
        }
    }
    assert!(
        in_backup.is_subset(&acked),
        "the backup holds unacknowledged writes"
    );
    assert!(
        at_central_before.keys().any(|n| !in_backup.contains(n)),
        "central holds nothing the backup lacks: the restored box would not fork"
    );

    let restore = edge_command(
        box_dir.path(),
        &[OsStr::new("restore"), backup_file.as_os_str()],
    )
    .await;
    assert!(
        restore.status.success(),
        "aero-edge restore failed: {}",
        text(&restore.stderr)
    );
    let restored = text(&restore.stdout);
    assert_eq!(report_value(&restored, "site"), site.to_string());
    let kept = listing(box_dir.path())
        .into_iter()
        .filter(|name| name.starts_with("edge.db.replaced-"))
        .collect::<Vec<_>>();
    assert!(
        !kept.is_empty(),
        "the replaced database was not kept: {restored}"
    );
    assert!(restored.contains(&kept[0]), "{restored}");

    proxy.reopen();
    let edge = EdgeProcess::serve(box_dir.path(), &box_dir.path().join("edge.log")).await;
    let after_restore: Vec<usize> = (0..10)
        .map(|_| next.fetch_add(1, Ordering::SeqCst))
        .collect();
    for n in &after_restore {
        register(&edge, &tablet, *n).await;
    }
    let status = settled(&edge, &tablet).await;
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");

    let expected: BTreeSet<usize> = in_backup
        .iter()
        .chain(at_central_before.keys())
        .chain(after_restore.iter())
        .copied()
        .collect();
    let at_central = central_customers(&central, site);
    let doubled: Vec<_> = at_central
        .iter()
        .filter(|(_, count)| **count != 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "registrations at central more than once: {doubled:?}"
    );
    assert_eq!(
        at_central.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "central holds other registrations than the backup's, central's own and the new ones"
    );
    // What the restore lost: exactly the writes acknowledged after the backup and never pushed.
    let lost: BTreeSet<usize> = acked.difference(&expected).copied().collect();
    assert_eq!(
        lost,
        stranded.iter().map(|a| a.n).collect::<BTreeSet<_>>(),
        "the restore lost other writes than the ones never pushed after the backup"
    );
    // The restored box learns back from central what it had forgotten.
    if let Some(forgotten) = at_central_before.keys().find(|n| !in_backup.contains(n)) {
        let lookup = format!(
            "/v1/customers?phone={}",
            phone(*forgotten).replace('+', "%2B")
        );
        wait_until(
            "the restored box to learn a forgotten registration",
            Duration::from_secs(10),
            || async {
                edge.request(Method::GET, &lookup, &tablet)
                    .send()
                    .await
                    .expect("lookup")
                    .json::<Value>()
                    .await
                    .is_ok_and(|b| b["customers"].as_array().is_some_and(|c| c.len() == 1))
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_while_the_edge_serves_is_refused_and_changes_nothing() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let box_dir = tempfile::tempdir().expect("box dir");
    let backups = tempfile::tempdir().expect("backup dir");
    let backup_file = backups.path().join("edge.db");
    let (_site, edge, tablet) = venue_process(
        &central,
        &owner,
        "Busyford",
        &central.url(""),
        box_dir.path(),
    )
    .await;
    register(&edge, &tablet, 1).await;
    let backup = edge_command(
        box_dir.path(),
        &[OsStr::new("backup"), backup_file.as_os_str()],
    )
    .await;
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    register(&edge, &tablet, 2).await;
    settled(&edge, &tablet).await;
    let before = listing(box_dir.path());

    let restore = edge_command(
        box_dir.path(),
        &[OsStr::new("restore"), backup_file.as_os_str()],
    )
    .await;
    assert!(!restore.status.success(), "a restore ran beside the edge");
    let stderr = text(&restore.stderr);
    assert!(
        stderr.contains("a running service: stop it first")
            && stderr.contains("aero-edge restore cannot run beside it"),
        "{stderr}"
    );
    assert_eq!(
        listing(box_dir.path()),
        before,
        "the restore changed the data directory"
    );
    // The serving database is the same one: the registration made after the backup is there
    // and the edge keeps taking writes.
    let found: Value = edge
        .request(
            Method::GET,
            &format!("/v1/customers?phone={}", phone(2).replace('+', "%2B")),
            &tablet,
        )
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    assert_eq!(
        found["customers"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    register(&edge, &tablet, 3).await;
    settled(&edge, &tablet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_another_venue_is_refused_by_restore() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let here_dir = tempfile::tempdir().expect("box dir");
    let (here_site, mut here, _) = venue_process(
        &central,
        &owner,
        "Hereford",
        &central.url(""),
        here_dir.path(),
    )
    .await;
    let there_site = central.create_site(&owner, "Thereby").await;
    let there = TestEdge::start(
        &central,
        &central.enrollment_token(&owner, there_site).await,
    )
    .await;
    let (_, their_tablet) = central.create_device(&owner, there_site, "tablet").await;
    wait_until(
        "the other venue's edge to serve",
        Duration::from_secs(20),
        || async { there.status(&their_tablet).await.is_some() },
    )
    .await;
    let backups = tempfile::tempdir().expect("backup dir");
    let theirs = backups.path().join("thereby.db");
    let backup = edge_command(
        there.data_dir.path(),
        &[OsStr::new("backup"), theirs.as_os_str()],
    )
    .await;
    assert!(backup.status.success(), "{}", text(&backup.stderr));

    here.kill();
    let contents = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        listing(dir)
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(dir.join(&name)).expect("read");
                (name, bytes)
            })
            .collect()
    };
    let names = listing(here_dir.path());
    let before = contents(here_dir.path());
    let restore = edge_command(
        here_dir.path(),
        &[OsStr::new("restore"), theirs.as_os_str()],
    )
    .await;
    assert!(
        !restore.status.success(),
        "another venue's backup was restored"
    );
    let stderr = text(&restore.stderr);
    assert!(
        stderr.contains(&format!("is a backup of site {there_site}"))
            && stderr.contains(&format!("enrolled for site {here_site}")),
        "{stderr}"
    );
    let after = contents(here_dir.path());
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(
        listing(here_dir.path()),
        names,
        "the refused restore left files"
    );
    // The lock file names the pid of its last holder (the restore, for a moment): not data.
    assert!(
        changed.iter().all(|name| *name == "serve.lock"),
        "the refused restore changed {changed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_central_backup_taken_while_it_serves_is_served_by_a_new_central() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Copyham").await;
    let other = central.create_site(&owner, "Duplicaton").await;
    let edge = TestEdge::start(&central, &central.enrollment_token(&owner, site).await).await;
    let (_, tablet) = central.create_device(&owner, site, "tablet").await;
    wait_until(
        "the edge to accept the tablet",
        Duration::from_secs(20),
        || async { edge.status(&tablet).await.is_some() },
    )
    .await;
    for n in 0..5 {
        let response = edge
            .request(Method::POST, "/v1/customers", &tablet)
            .json(&registration(n))
            .send()
            .await
            .expect("register");
        expect_status(response, 201).await;
    }
    wait_until(
        "central to receive the customers",
        Duration::from_secs(20),
        || async { central_customers(&central, site).len() == 5 },
    )
    .await;

    let backups = tempfile::tempdir().expect("backup dir");
    let target = backups.path().join("central.db");
    let report = aero_central::backup::backup(&central.settings(), &target).expect("backup");
    assert_eq!(report.contents.sites, 2);
    assert_eq!(report.contents.customers, 5);
    assert_eq!(
        report.written.bytes,
        std::fs::metadata(&target).expect("meta").len()
    );

    let copy = TestCentral::start_existing(|s| {
        s.database_url = Some(target.to_string_lossy().into_owned().into());
    })
    .await;
    let copy_owner = copy.owner_token().await;
    let sites = copy.get_json(&copy_owner, "/v1/sites", 200).await;
    let mut ids: Vec<&str> = sites["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![site.to_string(), other.to_string()];
    expected.sort();
    assert_eq!(ids, expected);
    for n in 0..5 {
        let found = copy
            .get_json(
                &copy_owner,
                &format!("/v1/customers?phone={}", phone(n).replace('+', "%2B")),
                200,
            )
            .await;
        assert_eq!(
            found["customers"].as_array().map(Vec::len),
            Some(1),
            "{found}"
        );
    }

    let mssql = aero_central::config::Settings {
        database_url: Some("server=tcp:127.0.0.1,1433;user=sa;password=x;database=aero".into()),
        ..central.settings()
    };
    let refused = aero_central::backup::backup(&mssql, &backups.path().join("mssql.db"))
        .expect_err("a SQL Server database is not copied");
    assert!(
        refused.to_string().contains("BACKUP DATABASE")
            && refused.to_string().contains("deploy/README.md"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restored_onto_a_new_box_delivers_its_pending_writes_once_enrolled_again() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let proxy = TcpProxy::start(central.addr).await;
    let old_dir = tempfile::tempdir().expect("old box");
    let (site, mut old_box, tablet) =
        venue_process(&central, &owner, "Newbox", &proxy.url(), old_dir.path()).await;
    // The uplink is down: the writes wait in the outbox, and the backup holds them.
    proxy.cut_all(Duration::from_secs(3600));
    for n in 0..5 {
        register(&old_box, &tablet, n).await;
    }
    let backups = tempfile::tempdir().expect("backup dir");
    let backup_file = backups.path().join("edge.db");
    let backup = edge_command(
        old_dir.path(),
        &[OsStr::new("backup"), backup_file.as_os_str()],
    )
    .await;
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert_eq!(report_value(&text(&backup.stdout), "pending ops"), "5");
    old_box.kill();

    // The box is replaced: a fresh data directory gets the backup and nothing else.
    let new_dir = tempfile::tempdir().expect("new box");
    let restore = edge_command(
        new_dir.path(),
        &[OsStr::new("restore"), backup_file.as_os_str()],
    )
    .await;
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let report = text(&restore.stdout);
    assert!(
        report.contains("aero-edge enroll --replace") && report.contains(&site.to_string()),
        "{report}"
    );
    assert!(report.contains("kept aside:    nothing"), "{report}");

    // A token for another site is refused: the box holds this site's data.
    let other = central.create_site(&owner, "Elsewhere").await;
    let wrong = central.enrollment_token(&owner, other).await;
    let central_url = central.url("");
    let refused = enroll_replacing(new_dir.path(), &central_url, &wrong).await;
    assert!(!refused.status.success(), "enrolled for another site");
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!("holds site {site}'s data")),
        "{stderr}"
    );
    assert!(
        !aero_edge::credential::path_in(new_dir.path()).exists(),
        "a credential was written for another site"
    );

    let token = central.enrollment_token(&owner, site).await;
    let enrolled = enroll_replacing(new_dir.path(), &central_url, &token).await;
    assert!(enrolled.status.success(), "{}", text(&enrolled.stderr));
    let new_box = EdgeProcess::serve(new_dir.path(), &new_dir.path().join("edge.log")).await;
    let status = settled(&new_box, &tablet).await;
    assert_eq!(status.dead_letters, 0, "{status:?}");
    let at_central = central_customers(&central, site);
    assert_eq!(
        at_central,
        (0..5).map(|n| (n, 1)).collect::<BTreeMap<_, _>>(),
        "the restored box's pending writes did not reach central exactly once"
    );
}
