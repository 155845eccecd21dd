//! `aero-edge status`: the venue's sync state for someone at the box, as a table or JSON.
//!
//! It reads `edge.db` through a read-only connection of its own (WAL lets it read beside the
//! daemon's writes) with the same code that serves `GET /v1/status`, and asks the data
//! directory's lock whether a daemon runs. No endpoint is opened and no key is needed: whoever
//! can read the data directory (the service user, root) can read the status, nobody else.
//! "online" is what the running daemon recorded after its last exchange with central.
//!
//! Exit codes: [`EXIT_HEALTHY`], [`EXIT_NOT_RUNNING`], [`EXIT_DEGRADED`]; 1 when the status
//! cannot be read (not enrolled, no database yet).

use crate::credential::Credential;
use crate::ops::human_duration;
use crate::replica::DB_FILE;
use aero_shared::data_lock::DataDirLock;
use aero_shared::table::key_values;
use aero_shared::wire::EdgeStatus;
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// The daemon runs, is online, not fenced, and no op is dead-lettered.
pub const EXIT_HEALTHY: i32 = 0;
/// No daemon runs on this data directory (the values are those it left).
pub const EXIT_NOT_RUNNING: i32 = 3;
/// The daemon runs but is offline, fenced by central, or holds dead letters.
pub const EXIT_DEGRADED: i32 = 4;

/// What `aero-edge status --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub site_id: Uuid,
    pub central_url: String,
    pub daemon: Daemon,
    /// When the status was read; ages are relative to it.
    pub checked_at: DateTime<Utc>,
    /// `GET /v1/status`'s document. `online` is false while no daemon runs.
    #[serde(flatten)]
    pub sync: EdgeStatus,
}

/// Whether `aero-edge serve` runs on this data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub running: bool,
    /// The daemon's process id, when it runs.
    pub pid: Option<u32>,
}

impl StatusReport {
    /// Reads the status of the edge whose data directory is `data_dir`, at `now`.
    pub fn read(data_dir: &Path, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let credential = Credential::load(data_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} holds no enrolled edge: run `aero-edge enroll --central URL --token TOKEN`",
                data_dir.display()
            )
        })?;
        let holder = DataDirLock::holder(data_dir)?;
        let path = data_dir.join(DB_FILE);
        anyhow::ensure!(
            path.exists(),
            "{} does not exist yet: the edge was enrolled but has not pulled its replica; \
             start it (`systemctl start aero-edge`)",
            path.display()
        );
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} read-only", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut sync = crate::replica::status(&conn, now)
            .with_context(|| format!("reading the sync state in {}", path.display()))?;
        let daemon = Daemon {
            running: holder.is_some(),
            pid: holder.flatten(),
        };
        // What a stopped daemon recorded says nothing about the link now.
        sync.online &= daemon.running;
        Ok(Self {
            site_id: credential.site_id,
            central_url: credential.central().to_string(),
            daemon,
            checked_at: now,
            sync,
        })
    }

    /// The exit code `aero-edge status` ends with.
    pub fn exit_code(&self) -> i32 {
        if !self.daemon.running {
            EXIT_NOT_RUNNING
        } else if !self.sync.online || self.sync.fenced.is_some() || self.sync.dead_letters > 0 {
            EXIT_DEGRADED
        } else {
            EXIT_HEALTHY
        }
    }

    /// One word for the whole state, with the reason when it is not healthy.
    pub fn verdict(&self) -> String {
        if !self.daemon.running {
            return "NOT RUNNING: start it with `systemctl start aero-edge`".into();
        }
        let mut problems = Vec::new();
        if self.sync.fenced.is_some() {
            problems.push("fenced by central (enroll this box again)".to_string());
        } else if !self.sync.online {
            problems.push("offline (the venue keeps selling; ops wait in the outbox)".into());
        }
        if self.sync.dead_letters > 0 {
            problems.push(format!(
                "{} dead letter(s) for HQ to resolve",
                self.sync.dead_letters
            ));
        }
        if problems.is_empty() {
            "healthy".into()
        } else {
            format!("DEGRADED: {}", problems.join("; "))
        }
    }

    /// The table an operator reads.
    pub fn table(&self) -> String {
        let s = &self.sync;
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let daemon = match (self.daemon.running, self.daemon.pid) {
            (true, Some(pid)) => format!("running (pid {pid})"),
            (true, None) => "running".into(),
            (false, _) => "not running".into(),
        };
        let online = if self.daemon.running {
            yes_no(s.online)
        } else {
            "no (the daemon is not running)".into()
        };
        let pending = match s.oldest_pending_age_seconds {
            Some(age) if s.pending_ops > 0 => {
                format!("{} (oldest waiting {})", s.pending_ops, human_duration(age))
            }
            _ => s.pending_ops.to_string(),
        };
        let mut rows = vec![
            ("site", self.site_id.to_string()),
            ("central", self.central_url.clone()),
            ("daemon", daemon),
            ("online", online),
            (
                "fenced",
                s.fenced
                    .as_ref()
                    .map_or_else(|| "no".into(), |why| format!("YES: {why}")),
            ),
            ("pending ops", pending),
            ("last push", self.when(s.last_push_at)),
            ("last pull", self.when(s.last_pull_at)),
            ("cursor", s.cursor.to_string()),
            ("dead letters", s.dead_letters.to_string()),
        ];
        if s.skipped_changes > 0 {
            rows.push(("skipped changes", s.skipped_changes.to_string()));
        }
        rows.push((
            "last error",
            s.last_error.clone().unwrap_or_else(|| "-".into()),
        ));
        rows.push(("status", self.verdict()));
        key_values(&rows)
    }

    fn when(&self, at: Option<DateTime<Utc>>) -> String {
        match at {
            Some(at) => format!(
                "{} ({} ago)",
                at.to_rfc3339_opts(SecondsFormat::Secs, true),
                human_duration((self.checked_at - at).num_seconds())
            ),
            None => "never".into(),
        }
    }
}

/// `aero-edge status [--json]`: prints the status and returns the exit code.
pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<i32> {
    let report = StatusReport::read(data_dir, Utc::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.exit_code())
}
