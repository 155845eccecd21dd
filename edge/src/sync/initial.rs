//! The initial replica, pulled by `aero-edge enroll` right after the credential is stored, so
//! the first start serves a complete replica at once (device keys, products, the site) instead
//! of refusing terminals until its first pull lands, and the operator who enrolls at a
//! terminal sees the pull's progress.
//!
//! The pull is resumable: each page commits with its cursor, so if it stops (central
//! unreachable, Ctrl-C) `aero-edge serve` continues where it stopped.

use crate::config::{ENROLL_PULL_PAGE_ROWS, Settings};
use crate::credential::Credential;
use crate::sync::progress::PullProgress;
use aero_shared::data_lock::DataDirLock;

/// Pulls the replica of a freshly enrolled edge, showing progress on stderr; returns the rows
/// applied. Holds the data directory like a serving edge does, so no daemon starts beside it.
pub async fn pull_after_enroll(settings: &Settings, credential: Credential) -> anyhow::Result<u64> {
    let _lock = DataDirLock::acquire(&settings.data_dir(), "aero-edge enroll's initial pull")?;
    let edge = crate::build(&enroll_pull_settings(settings), credential)?;
    let mut progress = PullProgress::on_stderr();
    edge.engine.pull_all_with(&mut progress).await?;
    progress.finish();
    Ok(progress.rows())
}

/// The settings of the initial pull: the configured ones with pages of at least
/// [`ENROLL_PULL_PAGE_ROWS`] rows, as no terminal waits behind the writer yet.
fn enroll_pull_settings(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    settings.sync.pull_page_rows = settings.sync.pull_page_rows.max(ENROLL_PULL_PAGE_ROWS);
    settings
}

/// Tells the operator how the initial pull ended. A pull that stopped is not an enrollment
/// failure: the credential is stored and the first start continues the pull.
pub fn report(outcome: anyhow::Result<u64>) {
    match outcome {
        Ok(rows) => eprintln!("replica pulled ({rows} rows): the first start serves it at once"),
        Err(err) => eprintln!(
            "warning: the initial pull stopped ({err:#}); `aero-edge serve` continues it \
             from where it stopped"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_pull_asks_for_large_pages_and_keeps_the_rest_of_the_settings() {
        let mut settings = Settings::default();
        settings.sync.pull_page_rows = 50;
        settings.sync.push_batch_ops = 7;
        let initial = enroll_pull_settings(&settings);
        assert_eq!(initial.sync.pull_page_rows, ENROLL_PULL_PAGE_ROWS);
        assert_eq!(initial.sync.push_batch_ops, 7);
        settings.sync.pull_page_rows = 5000;
        assert_eq!(enroll_pull_settings(&settings).sync.pull_page_rows, 5000);
    }
}
