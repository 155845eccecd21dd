//! Probes of the machine itself, run before any scenario and printed with its description. The
//! same build measures very differently from one day to the next on a shared VM; these say how
//! fast the machine was at the time, in the three things a venue's request spends most on.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

/// Median and 99th percentile of a probe's samples.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub p99: f64,
}

impl Spread {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Self {
            median: samples[samples.len() / 2],
            p99: samples[samples.len() * 99 / 100],
        }
    }
}

/// What one small synchronous overwrite costs on the disk under the work dir, in ms: the floor
/// under every group commit.
pub fn fsync(dir: &Path) -> anyhow::Result<Spread> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    Ok(Spread::of(times))
}

/// Round trips of 64 bytes over one loopback TCP connection to an echoing thread, in µs: the
/// kernel's share of every HTTP request the edge serves.
pub fn loopback_round_trip() -> anyhow::Result<Spread> {
    const WARMUP: usize = 1_000;
    const ROUNDS: usize = 20_000;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::Builder::new()
        .name("probe-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut peer, _) = listener.accept()?;
            peer.set_nodelay(true)?;
            let mut message = [0u8; 64];
            for _ in 0..WARMUP + ROUNDS {
                peer.read_exact(&mut message)?;
                peer.write_all(&message)?;
            }
            Ok(())
        })?;
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut message = [5u8; 64];
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        let started = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut message)?;
        if round >= WARMUP {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("the probe's echo thread panicked"))??;
    Ok(Spread::of(times))
}

/// One thread's time to encode and decode a customer-sized JSON record, in µs per round trip,
/// over 20 batches of 2,000 (so the spread's 99th percentile is the slowest batch): the CPU's
/// speed at the work the edge's handlers do.
pub fn json_round_trip() -> anyhow::Result<Spread> {
    let record = serde_json::json!({
        "id": "0193a6c4-1f2e-7b3a-9c4d-5e6f70819203",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+447700900123",
        "email": "ada@example.com",
        "birth_date": "1990-12-10",
        "guardian_id": null,
        "home_site_id": "0193a6c4-1f2e-7b3a-9c4d-5e6f70819204",
        "created_at": "2026-12-06T10:00:00.000Z",
        "updated_at": "2026-12-06T10:00:00.000Z",
        "balances": { "stored_value": 2500, "arcade_credits": 40, "visits": 0 },
        "waiver_valid": true,
        "active_sessions": []
    });
    const BATCH: u32 = 2_000;
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = Instant::now();
        for _ in 0..BATCH {
            let text = serde_json::to_string(std::hint::black_box(&record))?;
            let back: serde_json::Value = serde_json::from_str(std::hint::black_box(&text))?;
            std::hint::black_box(back);
        }
        times.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(BATCH));
    }
    Ok(Spread::of(times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_middle_sample_and_the_one_below_the_top_percent() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let spread = Spread::of(samples);
        assert_eq!(spread.median, 51.0);
        assert_eq!(spread.p99, 100.0);
    }
}
