//! `aero-plug-sim`: runs simulated Kasa plugs on loopback for trying the edge by hand, and
//! prints where each one listens (TCP) and answers discovery (UDP).

use aero_plugsim::{Model, SimPlug};
use clap::Parser;

/// Simulated TP-Link Kasa plugs on 127.0.0.1, one port each.
#[derive(Debug, Parser)]
#[command(name = "aero-plug-sim", version)]
struct Args {
    /// How many plugs to run.
    #[arg(long, default_value_t = 4)]
    plugs: usize,
    /// Run only this model (hs103, hs110, kp115, hs300); by default the models take turns.
    #[arg(long)]
    model: Option<Model>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut plugs = Vec::with_capacity(args.plugs);
    for index in 0..args.plugs {
        let model = args.model.unwrap_or(Model::ALL[index % Model::ALL.len()]);
        let plug = SimPlug::start(model)?;
        println!(
            "{model}\t{}\t{}\t{}",
            plug.addr(),
            plug.device_id(),
            plug.udp_addr()
        );
        plugs.push(plug);
    }
    eprintln!("{} simulated plugs running; Ctrl-C stops them", plugs.len());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
