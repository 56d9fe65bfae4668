//! The engine suites again, with every journal on PostgreSQL: the lifecycle defects, the
//! crash and restart tests, the scheduled starts and the deterministic simulation (20
//! seeds unless `STEADFAST_SIM_SEEDS` says otherwise), each test's data directory getting
//! a schema of its own on a private server (`steadfast_tests::postgres`). The same test
//! code as the SQLite run; only the journal the engine is configured with differs.

/// Set before `main`, so every test of this binary sees it.
#[used]
#[unsafe(link_section = ".init_array")]
static ON_POSTGRES: extern "C" fn() = on_postgres;

extern "C" fn on_postgres() {
    // SAFETY: runs before `main`, while the process has one thread.
    unsafe {
        std::env::set_var("STEADFAST_TEST_BACKEND", "postgres");
        if std::env::var_os("STEADFAST_SIM_SEEDS").is_none() {
            std::env::set_var("STEADFAST_SIM_SEEDS", "20");
        }
    }
}

#[path = "lifecycle.rs"]
mod lifecycle;

#[path = "crash_restart.rs"]
mod crash_restart;

#[path = "scheduled_start.rs"]
mod scheduled_start;

#[path = "simulation.rs"]
mod simulation;
