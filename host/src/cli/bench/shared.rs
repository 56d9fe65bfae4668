//! The saga scenario on a PostgreSQL journal shared by `hosts` engines in this process,
//! each with its own leases, as separate hosts would have. Sagas start through the
//! engines in turn; each is awaited through the engine that started it (one that does not
//! run it hears of its completion through `LISTEN`, as a host serving a wait would).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{Figures, Sizes, expect_completed, options, order, per_second, run_concurrently};
use crate::engine::{Engine, EngineConfig, JournalBackend};
use crate::journal::leases::{LeaseConfig, PARTITIONS};

pub(super) async fn saga_throughput(
    url: &str,
    hosts: usize,
    sizes: Sizes,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    say!(
        "PostgreSQL saga throughput ({} sagas, {} in flight, {hosts} host(s))",
        sizes.sagas,
        sizes.in_flight
    );
    let schema = format!("steadfast_bench_{}", std::process::id());
    let scoped = {
        let (url, schema) = (url.to_owned(), schema.clone());
        tokio::task::spawn_blocking(move || crate::journal::fresh_schema(&url, &schema)).await??
    };
    let outcome = run(&scoped, hosts, sizes, figures).await;
    let (url, schema) = (url.to_owned(), schema.clone());
    tokio::task::spawn_blocking(move || crate::journal::drop_schema(&url, &schema)).await??;
    outcome
}

async fn run(url: &str, hosts: usize, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let dirs = tempfile::tempdir()?;
    let mut engines = Vec::with_capacity(hosts);
    for i in 0..hosts {
        let mut config = EngineConfig::new(dirs.path().join(format!("host-{i}")))
            .with_activity("noop", |_, input| async move { Ok(input) });
        config.limits = super::bench_limits();
        config.journal = JournalBackend::Postgres {
            url: url.to_owned(),
            lease: LeaseConfig {
                host: format!("bench-{i}"),
                ttl: Duration::from_secs(10),
            },
        };
        engines.push(
            Engine::open(config)
                .await
                .context("opening the shared journal")?,
        );
    }
    crate::examples::install(&engines[0]).await?;
    // Until the partitions are shared out (each takes its share within a lease round).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: Vec<usize> = engines.iter().map(|e| e.held_partitions().len()).collect();
        let share = (PARTITIONS as usize).div_ceil(hosts);
        if held.iter().sum::<usize>() == PARTITIONS as usize && held.iter().all(|&h| h <= share) {
            say!("  partitions per host: {held:?}");
            break;
        }
        if Instant::now() > deadline {
            bail!("the partitions were not shared out within a minute: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sequential = (sizes.sagas / 10).max(1);
    let start = Instant::now();
    for i in 0..sequential {
        let engine = &engines[i % hosts];
        let id = engine
            .start(
                "task_processing_saga",
                &order(i),
                options(format!("seq-{i}")),
            )
            .await?;
        expect_completed(&engine.wait_for_completion(&id).await?.status, &id)?;
    }
    figures.add(
        "pg_saga_seq_wf_per_s",
        per_second(sequential as f64, start.elapsed()),
        "workflows/s",
    );

    let start = Instant::now();
    run_concurrently(sizes.sagas, sizes.in_flight, |i| {
        let engine = engines[i % hosts].clone();
        async move {
            let id = engine
                .start(
                    "task_processing_saga",
                    &order(i),
                    options(format!("conc-{i}")),
                )
                .await?;
            expect_completed(&engine.wait_for_completion(&id).await?.status, &id)
        }
    })
    .await?;
    figures.add(
        "pg_saga_conc_wf_per_s",
        per_second(sizes.sagas as f64, start.elapsed()),
        "workflows/s",
    );
    for engine in engines {
        engine.shutdown().await;
    }
    Ok(())
}
