//! `banshare nats init`: the stream of a nats:// log, made by the
//! administrator; `banshare nats keygen`: a node's NKey (docs/nats.md).

use anyhow::anyhow;
use banshare::config::Settings;
use banshare::transport::LogLocation;
use banshare::transport::nats::init::{
    self, DEFAULT_DUPLICATE_WINDOW, Done, InitError, StreamPlan,
};

use super::args::{NatsInitArgs, NatsKeygenArgs};
use super::failure::{Failure, Result, write_stdout};

pub fn init(args: NatsInitArgs, settings: Settings) -> Result<()> {
    let location = args.log.clone().or(settings.log.clone()).ok_or_else(|| {
        Failure::Usage(
            "no log given: pass --log nats://host/STREAM or set `log` in [common] of the config"
                .into(),
        )
    })?;
    let LogLocation::Nats(url) = location else {
        return Err(Failure::Usage(format!(
            "{location} is not a NATS stream: nats init takes nats://host[:port][,host...]/STREAM"
        )));
    };
    let plan = StreamPlan {
        replicas: args.replicas,
        duplicate_window: args.duplicate_window.unwrap_or(DEFAULT_DUPLICATE_WINDOW),
        max_bytes: args.max_bytes,
    };
    plan.check().map_err(|e| Failure::Usage(e.to_string()))?;
    if args.dry_run {
        let config = serde_json::to_string_pretty(&plan.config(&url))
            .map_err(|e| Failure::Runtime(anyhow!(e)))?;
        return write_stdout(&format!("{config}\n"));
    }
    match init::init(&url, &settings.nats, &plan) {
        Ok(Done::Created) => write_stdout(&format!(
            "created stream {} (subjects {}, {} replica(s)) for {url}\n",
            url.stream,
            url.stream_subjects(),
            plan.replicas
        )),
        Ok(Done::AlreadyThere) => write_stdout(&format!(
            "stream {} exists already with these settings: nothing changed\n",
            url.stream
        )),
        Err(e @ InitError::Plan(_)) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Runtime(anyhow!(e))),
    }
}

/// Writes a new NKey user seed to `args.out` (mode 600, never over a
/// file) and prints its public key.
pub fn keygen(args: NatsKeygenArgs) -> Result<()> {
    if args.out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists: an NKey is not replaced by accident; remove it first",
            args.out.display()
        )));
    }
    let pair = nkeys::KeyPair::new_user();
    let seed = pair
        .seed()
        .map_err(|e| Failure::Runtime(anyhow!("making an NKey: {e}")))?;
    banshare::durable::write_atomic(&args.out, format!("{seed}\n").as_bytes(), 0o600).map_err(
        |e| Failure::Runtime(anyhow!(e).context(format!("writing {}", args.out.display()))),
    )?;
    write_stdout(&format!("{}\n", pair.public_key()))
}
