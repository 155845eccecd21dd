//! Change hints: which venues the change log grew for, learned from the log itself every quarter
//! second (so several central instances sharing one database each hint their own edges, whoever
//! wrote the change). A venue is hinted only when a change in its scope landed, its own rows or
//! chain-wide ones: with hundreds of venues on the hint socket, a change at one of them wakes one
//! edge, not all of them (each of which would pull, and have its pull recorded).

use crate::store::{ChangeScope, Store, StoreResult};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// How often the change log's head is read.
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);
/// Most changes read per query while catching up (a bulk import can add many at once).
const SCOPES_PER_READ: u32 = 10_000;
/// Hints kept for a socket that is slow to send them; one that falls further behind is hinted
/// once with the latest head instead (see [`HintReceiver::next`]).
const HINTS_BUFFERED: usize = 256;

/// What the change log grew by since the previous hint.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hint {
    /// The highest seq among the changes.
    pub head: i64,
    /// A change visible to every venue is among them.
    chain_wide: bool,
    /// The venues whose own rows changed.
    sites: HashSet<Uuid>,
}

impl Hint {
    /// The hint for a set of changes, `None` when there are none.
    fn of(scopes: &[ChangeScope]) -> Option<Self> {
        let mut hint = Self {
            head: scopes.last()?.seq,
            ..Self::default()
        };
        for scope in scopes {
            match scope.site_id {
                Some(site) => {
                    hint.sites.insert(site);
                }
                None => hint.chain_wide = true,
            }
        }
        Some(hint)
    }

    /// Whether the venue has something new to pull.
    pub fn concerns(&self, site_id: Uuid) -> bool {
        self.chain_wide || self.sites.contains(&site_id)
    }
}

/// The hints of one central instance; cloned into every request's state.
#[derive(Clone, Debug)]
pub struct ChangeHints {
    head: watch::Receiver<i64>,
    hints: broadcast::Sender<Arc<Hint>>,
}

impl ChangeHints {
    /// Reads the head and starts watching the change log; the watch ends once every clone of
    /// the returned value is dropped.
    pub async fn start(store: Arc<dyn Store>) -> StoreResult<Self> {
        let initial = store.change_head().await?;
        let (head_tx, head) = watch::channel(initial);
        let (hints, _) = broadcast::channel(HINTS_BUFFERED);
        let watcher = Watcher {
            store,
            seen: initial,
            head: head_tx,
            hints: hints.clone(),
        };
        tokio::spawn(watcher.run());
        Ok(Self { head, hints })
    }

    /// The change log's head as last read.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// The hints for one venue, from now on.
    pub fn subscribe(&self, site_id: Uuid) -> HintReceiver {
        HintReceiver {
            site_id,
            hints: self.hints.subscribe(),
            head: self.head.clone(),
        }
    }
}

/// One venue's hints.
#[derive(Debug)]
pub struct HintReceiver {
    site_id: Uuid,
    hints: broadcast::Receiver<Arc<Hint>>,
    head: watch::Receiver<i64>,
}

impl HintReceiver {
    /// The head to announce once the venue has something new to pull; `None` once central has
    /// stopped watching.
    pub async fn next(&mut self) -> Option<i64> {
        loop {
            match self.hints.recv().await {
                Ok(hint) if hint.concerns(self.site_id) => return Some(hint.head),
                Ok(_) => {}
                // Some of the hints missed may have concerned this venue: one pull too many
                // costs less than one missed.
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(*self.head.borrow()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

struct Watcher {
    store: Arc<dyn Store>,
    /// The highest seq hinted so far.
    seen: i64,
    head: watch::Sender<i64>,
    hints: broadcast::Sender<Arc<Hint>>,
}

impl Watcher {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(WATCH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.head.is_closed() {
                return;
            }
            if let Err(err) = self.step().await {
                tracing::warn!(error = %err, "reading the change log for hints failed");
            }
        }
    }

    /// Hints what the log grew by since the last step. Reading the head first keeps an idle
    /// chain to one cheap query per period.
    async fn step(&mut self) -> StoreResult<()> {
        let head = self.store.change_head().await?;
        if head < self.seen {
            // Central's database went back (restored from a backup): every venue must hear of
            // it to find its cursor ahead of the head.
            self.seen = head;
            self.publish(Hint {
                head,
                chain_wide: true,
                ..Hint::default()
            });
            return Ok(());
        }
        while self.seen < head {
            let scopes = self.store.change_scopes(self.seen, SCOPES_PER_READ).await?;
            let Some(hint) = Hint::of(&scopes) else {
                break;
            };
            self.seen = hint.head;
            self.publish(hint);
        }
        self.seen = self.seen.max(head);
        Ok(())
    }

    fn publish(&self, hint: Hint) {
        self.head.send_replace(hint.head);
        // No subscriber is no venue connected: nothing to tell.
        let _ = self.hints.send(Arc::new(hint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(seq: i64, site_id: Option<Uuid>) -> ChangeScope {
        ChangeScope { seq, site_id }
    }

    #[test]
    fn a_hint_concerns_the_venues_whose_rows_changed_or_all_for_a_chain_wide_change() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let own = Hint::of(&[scope(7, Some(a)), scope(9, Some(a))]).expect("a hint");
        assert_eq!(own.head, 9);
        assert!(own.concerns(a));
        assert!(!own.concerns(b));
        let chain = Hint::of(&[scope(10, Some(a)), scope(11, None)]).expect("a hint");
        assert!(chain.concerns(a) && chain.concerns(b));
        assert_eq!(Hint::of(&[]), None);
    }
}
