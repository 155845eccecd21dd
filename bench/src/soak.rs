//! The soak: minutes of mixed venue traffic against one edge at half the rate it can answer,
//! while its link to central is cut and restored on a schedule. Errors, latency, memory and CPU
//! are sampled over time; at the end the outbox drains and every write the edge acknowledged
//! must be at central exactly once.

use crate::central::Central;
use crate::edge::EdgeProcess;
use crate::load::{self, Expect, MakeRequest, OpenLoop, Sent, Stop};
use crate::lookup::lookup_request;
use crate::procfs::{self, CpuSnapshot};
use crate::proxy::TcpProxy;
use crate::sales::{SalesCatalog, checkin_body, order_body, poster, sell_passes};
use crate::writes::register_body;
use crate::{Cli, flush};
use chrono::{DateTime, SubsecRound, Utc};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use uuid::Uuid;

/// The venue under test and what its devices need to make valid requests.
pub struct Venue<'a> {
    pub central: &'a Central,
    pub site: Uuid,
    pub edge: &'a EdgeProcess,
    pub kiosk: &'a str,
    pub pos: &'a str,
    pub tablet: &'a str,
    pub catalog: &'a SalesCatalog,
    /// Customers with a valid waiver (seeded at another venue), who buy passes and jump.
    pub jumpers: &'a [Uuid],
}

/// The requests of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Lookup,
    Register,
    Waiver,
    Order,
    Checkin,
}

/// Each kind's share of every 100 requests: mostly kiosk lookups, as at a venue's front desk.
/// Orders buy two passes each and a check-in spends one, so passes never run out.
const MIX: [(Kind, u64); 5] = [
    (Kind::Lookup, 80),
    (Kind::Register, 6),
    (Kind::Waiver, 4),
    (Kind::Order, 5),
    (Kind::Checkin, 5),
];

impl Kind {
    /// The kind of the request built from random number `r` (its low digits).
    fn of(r: u64) -> Self {
        let mut at = r % 100;
        for (kind, share) in MIX {
            if at < share {
                return kind;
            }
            at -= share;
        }
        unreachable!("the shares add up to 100")
    }

    fn index(self) -> usize {
        MIX.iter()
            .position(|(k, _)| *k == self)
            .expect("every kind is in the mix")
    }

    fn name(self) -> &'static str {
        match self {
            Self::Lookup => "GET /v1/customers?phone=",
            Self::Register => "POST /v1/customers",
            Self::Waiver => "POST /v1/customers/{id}/waivers",
            Self::Order => "POST /v1/orders",
            Self::Checkin => "POST /v1/checkins",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::Register => "register",
            Self::Waiver => "waiver",
            Self::Order => "order",
            Self::Checkin => "checkin",
        }
    }
}

/// Builds the mix: kiosk lookups of seeded customers and check-ins, tablet registrations and
/// waivers, POS orders. Every request is valid, so anything but a 2xx is an error.
fn mix(venue: &Venue<'_>, customers: u64) -> MakeRequest {
    let host = venue.edge.addr.to_string();
    let kiosk_key = venue.kiosk.to_string();
    let (kiosk, tablet, pos) = (
        poster(venue.edge, venue.kiosk),
        poster(venue.edge, venue.tablet),
        poster(venue.edge, venue.pos),
    );
    let jumpers: Arc<Vec<Uuid>> = Arc::new(venue.jumpers.to_vec());
    let (pass, socks) = (venue.catalog.pass, venue.catalog.socks);
    let registrations = AtomicU64::new(0);
    let checkins = AtomicU64::new(0);
    let customers = customers.max(1);
    Arc::new(move |r| {
        let p = r / 100;
        let jumper = |i: u64| jumpers[(i % jumpers.len() as u64) as usize];
        match Kind::of(r) {
            Kind::Lookup => lookup_request(&host, &kiosk_key, p % customers),
            Kind::Register => {
                let n = registrations.fetch_add(1, Ordering::Relaxed);
                tablet("/v1/customers", register_body(3, n))
            }
            Kind::Waiver => tablet(
                &format!("/v1/customers/{}/waivers", jumper(p)),
                r#"{"signer_name":"Soak Guardian"}"#.to_string(),
            ),
            Kind::Order => pos("/v1/orders", order_body(jumper(p), pass, socks)),
            Kind::Checkin => {
                // Round robin with a fresh wristband each: never one already in a session.
                let n = checkins.fetch_add(1, Ordering::Relaxed);
                kiosk(
                    "/v1/checkins",
                    checkin_body(jumper(n), &format!("SOAK-{n}"), pass),
                )
            }
        }
    })
}

/// What the requests of one window (or of the whole run) came to.
struct Tally {
    answered: u64,
    /// Non-2xx answers and requests without an answer, by request kind and status or cause.
    errors: BTreeMap<String, u64>,
    late: u64,
    missed: u64,
    /// From when each request was due to its answer, microseconds, errors included.
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            answered: 0,
            errors: BTreeMap::new(),
            late: 0,
            missed: 0,
            latency_us: load::histogram(),
        }
    }

    fn record(&mut self, kind: Kind, sent: Sent) {
        let (latency, late) = match sent {
            Sent::Answered {
                status,
                latency,
                late,
            } => {
                if (200..300).contains(&status) {
                    self.answered += 1;
                } else {
                    *self
                        .errors
                        .entry(format!("{} {status}", kind.short()))
                        .or_default() += 1;
                }
                (latency, late)
            }
            Sent::Failed { why, latency, late } => {
                *self
                    .errors
                    .entry(format!("{} {why}", kind.short()))
                    .or_default() += 1;
                (latency, late)
            }
            Sent::Missed => {
                self.missed += 1;
                return;
            }
        };
        self.late += u64::from(late);
        self.latency_us
            .saturating_record(latency.as_micros().max(1) as u64);
    }

    fn add(&mut self, other: &Tally) {
        self.answered += other.answered;
        for (what, n) in &other.errors {
            *self.errors.entry(what.clone()).or_default() += n;
        }
        self.late += other.late;
        self.missed += other.missed;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms of one shape");
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn requests(&self) -> u64 {
        self.answered + self.error_count()
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        let detail: Vec<String> = self
            .errors
            .iter()
            .map(|(what, n)| format!("{n}x {what}"))
            .collect();
        format!("**{}** ({})", self.error_count(), detail.join(", "))
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

/// Shared by the load generator's report callback and the sampler.
struct Recorder {
    window: Tally,
    /// Latency of each kind over the whole run.
    by_kind: Vec<Histogram<u64>>,
    /// 2xx answers to each kind: the writes the edge acknowledged.
    acked: [u64; MIX.len()],
}

/// One sample row: the window that ended `at` after the start of the traffic.
struct Sample {
    at: Duration,
    seconds: f64,
    tally: Tally,
    rss_kib: u64,
    edge_cores: f64,
    /// Central (with the link proxy, on its runtime) and the load generator run in this
    /// process, on the same cores as the edge.
    central_cores: f64,
    loadgen_cores: f64,
    rest_cores: f64,
    pending_ops: Option<i64>,
    link_up: bool,
}

/// Cuts the link for `down` after every `up`, until dropped.
async fn flap(link: &TcpProxy, up: Duration, down: Duration, link_up: &AtomicBool) {
    loop {
        tokio::time::sleep(up).await;
        link.cut_all(down);
        link_up.store(false, Ordering::Relaxed);
        tokio::time::sleep(down).await;
        link_up.store(true, Ordering::Relaxed);
    }
}

pub async fn run(
    cli: &Cli,
    load: &Handle,
    venue: &Venue<'_>,
    link: &TcpProxy,
) -> anyhow::Result<()> {
    let edge = venue.edge;
    sell_passes(cli, load, edge, venue.pos, venue.catalog, venue.jumpers).await?;
    let make = mix(venue, cli.customers);

    // Calibration: the same mix, closed loop, link up.
    let calibration = load
        .spawn(load::run(
            edge.addr,
            cli.connections,
            Stop::Timed {
                warmup: Duration::from_secs(cli.warmup),
                measure: Duration::from_secs(cli.calibrate_seconds),
            },
            Arc::clone(&make),
            Expect::Success,
        ))
        .await??;
    let maximum = calibration.rate();
    let rate = cli.rate.unwrap_or(maximum / 2.0);
    let minutes = cli.minutes.max(1);
    println!(
        "## Soak: {minutes} min of mixed venue traffic at {rate:.0} requests/s, link to central up {} s / down {} s\n",
        cli.link_up_seconds, cli.link_down_seconds
    );
    let shares: Vec<String> = MIX
        .iter()
        .map(|(kind, share)| format!("{share}% `{}`", kind.name()))
        .collect();
    println!("Mix: {}.\n", shares.join(", "));
    println!(
        "Calibration (closed loop, {} connections, {} s, link up): **{maximum:.0} requests/s**, p99 {:.2} ms, {} not 2xx, {} failed. Soak rate: {rate:.0}/s ({}).\n",
        cli.connections,
        cli.calibrate_seconds,
        calibration.quantile_ms(0.99),
        calibration.unexpected.values().sum::<u64>(),
        calibration.failures,
        if cli.rate.is_some() {
            "set by --rate"
        } else {
            "half the calibration"
        }
    );
    flush();

    // Start drained, so that what central holds afterwards is exactly what the soak wrote.
    edge.wait_outbox_empty(
        venue.kiosk,
        Duration::from_millis(100),
        Duration::from_secs(300),
    )
    .await?;
    let since = Utc::now().trunc_subsecs(3);

    let recorder = Arc::new(Mutex::new(Recorder {
        window: Tally::new(),
        by_kind: MIX.iter().map(|_| load::histogram()).collect(),
        acked: [0; MIX.len()],
    }));
    let report = {
        let recorder = Arc::clone(&recorder);
        Arc::new(move |r: u64, sent: Sent| {
            let kind = Kind::of(r);
            let mut rec = recorder.lock().expect("recorder lock");
            if let Sent::Answered {
                status, latency, ..
            } = sent
                && (200..300).contains(&status)
            {
                rec.acked[kind.index()] += 1;
                rec.by_kind[kind.index()].saturating_record(latency.as_micros().max(1) as u64);
            }
            rec.window.record(kind, sent);
        }) as load::Report
    };
    let plan = OpenLoop {
        rate,
        duration: Duration::from_secs(minutes * 60),
        connections: cli.connections,
        late_after: Duration::from_millis(10),
        max_waiting: (rate as usize).max(cli.connections),
        timeout: Duration::from_secs(10),
    };
    println!(
        "Open loop: requests due at a fixed rate over {} keep-alive connections; latency counted from when each was due. Late: sent > {} ms after it was due; missed: not sent because {} were already waiting.\n",
        plan.connections,
        plan.late_after.as_millis(),
        plan.max_waiting
    );
    println!(
        "| elapsed | requests | errors | late | missed | p50 ms | p99 ms | max ms | edge RSS | edge CPU (cores) | central and link proxy CPU (cores) | load generator CPU (cores) | rest of machine (cores) | pending ops | link |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    flush();

    let started = Instant::now();
    let traffic = load.spawn(load::run_open(edge.addr, plan, make, report));
    let link_up = AtomicBool::new(true);
    let every = Duration::from_secs(cli.sample_seconds.max(1));
    let mut samples: Vec<Sample> = Vec::new();
    let sampling = async {
        let mut last = (started, CpuSnapshot::take(Some(edge.pid)));
        loop {
            let next = started + every * (samples.len() as u32 + 1);
            while Instant::now() < next && !traffic.is_finished() {
                tokio::time::sleep(Duration::from_millis(50).min(next - Instant::now())).await;
            }
            let done = traffic.is_finished();
            let tally = std::mem::replace(
                &mut recorder.lock().expect("recorder lock").window,
                Tally::new(),
            );
            let now = (Instant::now(), CpuSnapshot::take(Some(edge.pid)));
            let cpu = procfs::cpu_between(&last.1, &now.1);
            let seconds = (now.0 - last.0).as_secs_f64();
            let sample = Sample {
                at: now.0 - started,
                seconds,
                tally,
                rss_kib: procfs::rss(edge.pid)?.current_kib,
                edge_cores: cpu.edge / seconds,
                central_cores: cpu.central / seconds,
                loadgen_cores: cpu.loadgen / seconds,
                rest_cores: cpu.rest / seconds,
                pending_ops: edge
                    .status(venue.kiosk)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s["pending_ops"].as_i64()),
                link_up: link_up.load(Ordering::Relaxed),
            };
            print_sample(&sample);
            samples.push(sample);
            last = now;
            if done {
                return anyhow::Ok(());
            }
        }
    };
    tokio::select! {
        sampled = sampling => sampled?,
        () = flap(
            link,
            Duration::from_secs(cli.link_up_seconds),
            Duration::from_secs(cli.link_down_seconds),
            &link_up,
        ) => unreachable!("the link flaps until the traffic ends"),
    }
    traffic.await??;
    let cuts = link.cuts();

    // The link comes back for good, and the outbox drains.
    link.reopen();
    let drain_started = Instant::now();
    let status = edge
        .wait_outbox_empty(
            venue.kiosk,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )
        .await?;
    let drained = drain_started.elapsed();
    println!();
    summarize(&samples, &recorder.lock().expect("recorder lock"), cuts);
    println!(
        "After the traffic the link stayed up: outbox empty {:.1} s later; edge status `{status}`.\n",
        drained.as_secs_f64()
    );
    let acked = recorder.lock().expect("recorder lock").acked;
    verify(venue, since, &acked).await?;
    flush();
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_sample(s: &Sample) {
    let t = &s.tally;
    println!(
        "| {:.0} s | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
        s.at.as_secs_f64(),
        t.requests(),
        t.errors_text(),
        t.late,
        t.missed,
        t.ms(0.50),
        t.ms(0.99),
        t.max_ms(),
        mib(s.rss_kib),
        s.edge_cores,
        s.central_cores,
        s.loadgen_cores,
        s.rest_cores,
        s.pending_ops.map_or("?".into(), |p| p.to_string()),
        if s.link_up { "up" } else { "down" },
    );
    flush();
}

/// Least-squares slope of RSS against time, KiB per minute.
fn slope_kib_per_min(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.at.as_secs_f64() / 60.0).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Growth of RSS over the last 80% of the run above which memory is not called flat. Growth is
/// the least-squares trend across that span, not one sample against another: under bursty load
/// RSS moves by a few percent from second to second as allocator arenas fill and empty, so two
/// single samples say more about the moment they were taken than about a leak.
const FLAT_GROWTH: f64 = 0.05;

/// Least-squares fit of RSS against time over `samples`: the trend's relative growth from the
/// first sample's time to the last (0.05 is 5%).
fn trend_growth(samples: &[&Sample]) -> f64 {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return 0.0;
    };
    let n = samples.len() as f64;
    let minutes = |s: &Sample| s.at.as_secs_f64() / 60.0;
    let mean_x = samples.iter().map(|s| minutes(s)).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let slope = slope_kib_per_min(samples);
    let fitted_start = mean_y + slope * (minutes(first) - mean_x);
    let rise = slope * (minutes(last) - minutes(first));
    if fitted_start <= 0.0 {
        0.0
    } else {
        rise / fitted_start
    }
}

fn summarize(samples: &[Sample], recorder: &Recorder, cuts: u64) {
    let Some(last) = samples.last() else {
        return;
    };
    // Per minute: the file keeps these rows.
    println!(
        "Per minute:\n\n| minute | requests | errors | late | missed | p50 ms | p99 ms | max ms | edge RSS at the end | edge CPU (cores) | central and link proxy CPU (cores) | load generator CPU (cores) | rest of machine (cores) | most pending ops | link down at a sample |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut whole = Tally::new();
    let mut minute = 0u64;
    let mut i = 0;
    while i < samples.len() {
        minute += 1;
        let mut tally = Tally::new();
        let (mut edge, mut central, mut loadgen, mut rest) = (0.0, 0.0, 0.0, 0.0);
        let (mut secs, mut pending, mut down) = (0.0, 0i64, 0);
        let mut end = &samples[i];
        while i < samples.len() && samples[i].at.as_secs_f64() <= minute as f64 * 60.0 + 1.0 {
            let s = &samples[i];
            tally.add(&s.tally);
            edge += s.edge_cores * s.seconds;
            central += s.central_cores * s.seconds;
            loadgen += s.loadgen_cores * s.seconds;
            rest += s.rest_cores * s.seconds;
            secs += s.seconds;
            pending = pending.max(s.pending_ops.unwrap_or(0));
            down += usize::from(!s.link_up);
            end = s;
            i += 1;
        }
        if secs == 0.0 {
            continue;
        }
        println!(
            "| {minute} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {pending} | {down} |",
            tally.requests(),
            tally.errors_text(),
            tally.late,
            tally.missed,
            tally.ms(0.50),
            tally.ms(0.99),
            tally.max_ms(),
            mib(end.rss_kib),
            edge / secs,
            central / secs,
            loadgen / secs,
            rest / secs,
        );
        whole.add(&tally);
    }
    println!();

    let total = last.at.as_secs_f64();
    let at_minute_1 = samples
        .iter()
        .find(|s| s.at.as_secs_f64() >= 59.0)
        .unwrap_or(&samples[0]);
    let base = samples
        .iter()
        .find(|s| s.at.as_secs_f64() >= total * 0.2)
        .unwrap_or(&samples[0]);
    let tail: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at.as_secs_f64() >= total * 0.2)
        .collect();
    let peak_tail = tail.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let second_half: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at.as_secs_f64() >= total / 2.0)
        .collect();
    let slope = slope_kib_per_min(&second_half);
    let growth = trend_growth(&tail);
    let flat = growth < FLAT_GROWTH;
    println!("| measure | value |\n|---|---|");
    println!(
        "| requests sent / answered 2xx | {} / {} |",
        whole.requests(),
        whole.answered
    );
    println!(
        "| errors (non-2xx and no answer) | {} |",
        whole.errors_text()
    );
    println!(
        "| late (sent > 10 ms after due) / missed | {} / {} |",
        whole.late, whole.missed
    );
    println!(
        "| latency from due, whole run: p50 / p99 / p99.9 / max | {:.2} / **{:.2}** / {:.2} / {:.1} ms |",
        whole.ms(0.50),
        whole.ms(0.99),
        whole.ms(0.999),
        whole.max_ms()
    );
    for (kind, _) in MIX {
        let h = &recorder.by_kind[kind.index()];
        println!(
            "| `{}`: 2xx answers, p50 / p99 / max | {} in total, {:.2} / {:.2} / {:.1} ms |",
            kind.name(),
            recorder.acked[kind.index()],
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    println!("| link cuts | {cuts} |");
    println!(
        "| edge RSS at minute 1 / at {:.0}% of the run / at the end / highest after {:.0}% | {} / {} / {} / {} |",
        base.at.as_secs_f64() * 100.0 / total,
        base.at.as_secs_f64() * 100.0 / total,
        mib(at_minute_1.rss_kib),
        mib(base.rss_kib),
        mib(last.rss_kib),
        mib(peak_tail)
    );
    println!("| RSS slope over the second half (least squares) | {slope:+.0} KiB/min |");
    println!(
        "| memory | **{}**: the least-squares trend rises {:+.1}% from {:.0}% of the run to the end (flat means under {:.0}%) |",
        if flat { "flat" } else { "grows" },
        growth * 100.0,
        base.at.as_secs_f64() * 100.0 / total,
        FLAT_GROWTH * 100.0
    );
    println!();
}

/// Every write the edge acknowledged is at central exactly once: counted at central (its
/// store, as HQ's reports count) from the start of the soak, against the 201s.
async fn verify(venue: &Venue<'_>, since: DateTime<Utc>, acked: &[u64]) -> anyhow::Result<()> {
    let store = &venue.central.store;
    let report = store
        .daily_report(venue.site, since, Utc::now() + chrono::Duration::hours(1))
        .await?;
    let mut waivers = 0i64;
    for &jumper in venue.jumpers {
        waivers += store
            .waivers_for(jumper)
            .await?
            .iter()
            .filter(|w| w.site_id == venue.site && w.signed_at >= since)
            .count() as i64;
    }
    println!(
        "Nothing lost, nothing doubled (central's store, rows created since the soak began):\n"
    );
    println!("| write | acknowledged by the edge (2xx) | at central | |\n|---|---|---|---|");
    let mut all_match = true;
    for (kind, at_central) in [
        (Kind::Register, report.new_customers),
        (Kind::Waiver, waivers),
        (Kind::Order, report.orders),
        (Kind::Checkin, report.checkins),
    ] {
        let acked = acked[kind.index()] as i64;
        let same = acked == at_central;
        all_match &= same;
        println!(
            "| `{}` | {acked} | {at_central} | {} |",
            kind.name(),
            if same { "exactly once" } else { "**differs**" }
        );
    }
    println!();
    anyhow::ensure!(
        all_match,
        "central does not hold exactly the acknowledged writes"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss_kib: impl Fn(u64) -> u64) -> Vec<Sample> {
        (0..600)
            .map(|second| Sample {
                at: Duration::from_secs(second),
                seconds: 1.0,
                tally: Tally::new(),
                rss_kib: rss_kib(second),
                edge_cores: 0.0,
                central_cores: 0.0,
                loadgen_cores: 0.0,
                rest_cores: 0.0,
                pending_ops: None,
                link_up: true,
            })
            .collect()
    }

    #[test]
    fn memory_that_swings_around_a_level_is_flat_whatever_its_last_sample() {
        // 38 MiB give or take 2 MiB, ending on a high swing.
        let swinging = samples(|s| 38 * 1024 + [0, 2048, 1024, 0, 0, 1536][(s % 6) as usize]);
        let refs: Vec<&Sample> = swinging.iter().collect();
        let growth = trend_growth(&refs);
        assert!(growth.abs() < 0.01, "trend {growth}");
    }

    #[test]
    fn memory_that_climbs_steadily_is_not_flat() {
        // 40 MiB climbing 20 KiB a second: 12 MiB, 30%, over ten minutes.
        let leaking = samples(|s| 40 * 1024 + 20 * s);
        let refs: Vec<&Sample> = leaking.iter().collect();
        let growth = trend_growth(&refs);
        assert!((growth - 0.29).abs() < 0.01, "trend {growth}");
        assert!(growth > FLAT_GROWTH);
    }
}
