//! Several hosts on one PostgreSQL journal: partitions, leases, fencing and wake-ups.
//!
//! Every instance belongs to one of [`PARTITIONS`] partitions, by a hash of its key
//! (`tenant/id`). A host runs an instance only while it holds its partition's lease: a
//! row of `partitions` naming it as owner with an epoch and an expiry by the database's
//! clock. The lease thread renews what it holds, gives back what is beyond its fair share
//! of the live hosts, and takes expired or free partitions up to that share, each with a
//! new epoch. Every write of an activation (a step, the end of a generation, an activity
//! result, a timer firing) first reads its partition's row `FOR SHARE` with the epoch it
//! holds: a host that lost the lease writes nothing, and a takeover waits for a write in
//! progress to commit or roll back. A host frozen in the middle of a transaction cannot
//! hold a partition hostage: its connections end a transaction that is idle longer than
//! half a lease.
//!
//! Work written by a host for an instance another host owns (a start, a raised event, a
//! termination, a child's result) reaches the owner through `wakeups`: a trigger adds a
//! row and `NOTIFY`s; the owner's listener takes the rows of its partitions when notified
//! and at least every [`POLL`] in case a notification was missed.
//!
//! Portable SQL: row locks with `FOR SHARE` / `FOR UPDATE SKIP LOCKED` and the database's
//! `now()`, which CockroachDB and YugabyteDB have too. `LISTEN/NOTIFY` and the trigger
//! are PostgreSQL's: on those stores the listener's polling is the only path (see
//! ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::JournalError;
use super::sql::PgConn;
use crate::model::InstanceId;

/// Partitions of a shared journal. Fixed for the life of a database (the schema creates
/// this many lease rows).
pub const PARTITIONS: u32 = 64;

/// How often the listener looks for wake-ups when no notification came.
const POLL: Duration = Duration::from_millis(500);

/// The partition of an instance key (FNV-1a, stable across builds and hosts).
pub fn partition_of(key: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(PARTITIONS)) as u32
}

/// How a host takes part in a shared journal.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This host's name in `partitions.owner` and in each row it writes.
    pub host: String,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub ttl: Duration,
}

impl LeaseConfig {
    /// A host name unique to this process: the machine's name, the pid and a random
    /// suffix.
    pub fn unique_host() -> String {
        let machine = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let machine: String = machine
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect();
        let mut random = [0u8; 4];
        let _ = getrandom::fill(&mut random);
        format!(
            "{machine}-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(random)
        )
    }
}

/// Checks a host name: it is the connection's `application_name`, which PostgreSQL cuts
/// at 63 bytes, and the owner named in `partitions`, so it must survive both unchanged.
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "'{name}' is not a host name: use 1 to 63 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// What the engine hears from the lease and wake-up threads.
#[derive(Debug)]
pub enum LeaseChange {
    /// These partitions are now this host's: recover their instances.
    Gained(Vec<u32>),
    /// These are no longer this host's: drop their instances from memory.
    Lost(Vec<u32>),
    /// Another host wrote something these instances' owner (this host) must act on.
    Wake(Vec<InstanceId>),
    /// These instances changed status (on any host): whoever waits on them here looks.
    Status(Vec<InstanceId>),
}

/// Which partitions this host holds, and with which epoch. For an SQLite journal the
/// one engine holds them all.
#[derive(Debug)]
pub(crate) struct Ownership {
    /// `None`: everything (SQLite).
    shared: Option<SharedOwnership>,
}

#[derive(Debug)]
struct SharedOwnership {
    host: String,
    held: RwLock<HashMap<u32, i64>>,
    changes: mpsc::UnboundedSender<LeaseChange>,
}

impl Ownership {
    pub(crate) fn everything() -> Ownership {
        Ownership { shared: None }
    }

    /// Whether this host runs `id` now.
    pub(crate) fn owns(&self, id: &InstanceId) -> bool {
        self.fence(id).is_some()
    }

    /// What a write for `id` must find in `partitions` to go ahead: `None` if this host
    /// does not hold the partition; `Some(None)` if it needs no check (SQLite).
    pub(crate) fn fence(&self, id: &InstanceId) -> Option<Option<LeaseFence>> {
        let Some(shared) = &self.shared else {
            return Some(None);
        };
        let partition = partition_of(id.as_str());
        let held = shared.held.read().unwrap_or_else(|p| p.into_inner());
        held.get(&partition).map(|&epoch| {
            Some(LeaseFence {
                partition,
                epoch,
                host: shared.host.clone(),
            })
        })
    }

    /// Forgets `partition` (a write under `epoch` found the lease gone) and tells the
    /// engine; nothing if the host holds it under a newer epoch since.
    pub(crate) fn lost(&self, partition: u32, epoch: i64) {
        if let Some(shared) = &self.shared {
            let mut held = shared.held.write().unwrap_or_else(|p| p.into_inner());
            let removed = held.get(&partition) == Some(&epoch) && held.remove(&partition).is_some();
            drop(held);
            if removed {
                let _ = shared.changes.send(LeaseChange::Lost(vec![partition]));
            }
        }
    }

    /// The partitions held now.
    pub(crate) fn held(&self) -> Vec<u32> {
        match &self.shared {
            None => (0..PARTITIONS).collect(),
            Some(shared) => {
                let mut held: Vec<u32> = shared
                    .held
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .copied()
                    .collect();
                held.sort_unstable();
                held
            }
        }
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

/// What a write must still find true of this host's lease, checked inside its
/// transaction (nothing to check on SQLite).
pub(crate) struct Lease {
    pub(crate) fence: Option<LeaseFence>,
    pub(crate) ownership: Arc<Ownership>,
}

impl Lease {
    pub(crate) fn check(
        &self,
        db: &super::sql::Db<'_>,
        id: &InstanceId,
    ) -> Result<(), JournalError> {
        match &self.fence {
            None => Ok(()),
            Some(fence) => fence.check(db, id, &self.ownership),
        }
    }
}

/// The lease a write was decided under, checked inside its transaction.
#[derive(Debug, Clone)]
pub(crate) struct LeaseFence {
    pub(crate) partition: u32,
    pub(crate) epoch: i64,
    pub(crate) host: String,
}

impl LeaseFence {
    /// Takes the partition's row `FOR SHARE` if it is still this host's with this epoch;
    /// refuses the write otherwise.
    pub(crate) fn check(
        &self,
        db: &super::sql::Db<'_>,
        id: &InstanceId,
        ownership: &Ownership,
    ) -> Result<(), JournalError> {
        // Checked once per transaction: the row stays share-locked until it commits.
        if !db.first_in_transaction(&format!("lease {} {}", self.partition, self.epoch)) {
            return Ok(());
        }
        let held = db.query_opt(
            "SELECT epoch FROM partitions WHERE partition = ?1 AND owner = ?2 AND epoch = ?3
             FOR SHARE",
            super::sql::params![self.partition, self.host, self.epoch],
            |r| r.get::<i64>(0),
        )?;
        if held.is_none() {
            ownership.lost(self.partition, self.epoch);
            return Err(JournalError::Fenced {
                id: id.clone(),
                why: format!(
                    "this host no longer holds the lease of partition {} (epoch {})",
                    self.partition, self.epoch
                ),
            });
        }
        Ok(())
    }
}

/// The lease threads run while `stop` holds this.
pub(crate) const RUN: u8 = 0;
/// They stop and give the leases back (a shutdown, or the journal dropped).
pub(crate) const RELEASE: u8 = 1;
/// They stop and give nothing back, as a crashed host would not (crash tests).
pub(crate) const ABANDON: u8 = 2;

/// The threads of a host on a shared journal and how to end them.
pub(crate) struct Started {
    pub(crate) ownership: Arc<Ownership>,
    pub(crate) changes: mpsc::UnboundedReceiver<LeaseChange>,
    /// The lease thread: finished once it gave the leases back (or stopped).
    pub(crate) lease_thread: std::thread::JoinHandle<()>,
}

/// Starts the lease and wake-up threads of a host on a shared journal; they stop when
/// `stop` leaves [`RUN`].
pub(crate) fn start(
    url: &str,
    config: &LeaseConfig,
    stop: Arc<AtomicU8>,
) -> Result<Started, JournalError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let ownership = Arc::new(Ownership {
        shared: Some(SharedOwnership {
            host: config.host.clone(),
            held: RwLock::new(HashMap::new()),
            changes: tx,
        }),
    });
    let mut leases = PgConn::connect_as(url, &config.host)?;
    leases
        .client
        .batch_execute("SET lock_timeout = '1s'; SET statement_timeout = '5s'")?;
    let mut listener = PgConn::connect_as(url, &config.host)?;
    listener
        .client
        .batch_execute("LISTEN steadfast_wakeups; LISTEN steadfast_status")?;
    // The first round before anything else, so the engine recovers what it holds at once.
    let ttl = config.ttl;
    round(&mut leases, &ownership, ttl)?;
    let lease_thread = {
        let ownership = Arc::clone(&ownership);
        let stop = Arc::clone(&stop);
        let url = url.to_owned();
        let host = config.host.clone();
        std::thread::Builder::new()
            .name("steadfast-leases".into())
            .spawn(move || {
                while stop.load(Ordering::SeqCst) == RUN {
                    // A third of a lease between rounds, in slices, so a shutdown gives
                    // the leases back at once.
                    let round_at = std::time::Instant::now() + ttl / 3;
                    while stop.load(Ordering::SeqCst) == RUN && std::time::Instant::now() < round_at
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    if stop.load(Ordering::SeqCst) != RUN {
                        break;
                    }
                    if leases.client.is_closed() {
                        match PgConn::connect_as(&url, &host) {
                            Ok(fresh) => leases = fresh,
                            Err(e) => {
                                tracing::warn!(error = %e, "leases: cannot reconnect");
                                continue;
                            }
                        }
                    }
                    if let Err(e) = round(&mut leases, &ownership, ttl) {
                        tracing::warn!(error = %e, "leases: a round failed; trying again");
                    }
                }
                // Give everything back so the other hosts need not wait for expiry.
                if stop.load(Ordering::SeqCst) == RELEASE {
                    release_all(&mut leases, &ownership);
                }
            })
            .map_err(|e| JournalError::Storage(format!("cannot start the lease thread: {e}")))?
    };
    {
        let ownership = Arc::clone(&ownership);
        let url = url.to_owned();
        let host = config.host.clone();
        let stop_on_failure = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("steadfast-wakeups".into())
            .spawn(move || listen(listener, &url, &host, &ownership, &stop))
            .map_err(|e| {
                // The lease thread must not outlive a failed start.
                stop_on_failure.store(RELEASE, Ordering::SeqCst);
                JournalError::Storage(format!("cannot start the wake-up thread: {e}"))
            })?;
    }
    Ok(Started {
        ownership,
        changes: rx,
        lease_thread,
    })
}

/// One round of the lease thread: heartbeat, renew, give back beyond the fair share,
/// take up to it. One statement per partition, each its own transaction, so no two rows
/// are ever locked in an order a writer could cross.
fn round(conn: &mut PgConn, ownership: &Ownership, ttl: Duration) -> Result<(), JournalError> {
    let Some(shared) = &ownership.shared else {
        return Ok(());
    };
    let host = shared.host.as_str();
    let ttl_ms = ttl.as_millis() as i64;
    let client = &mut conn.client;
    client.execute(
        "INSERT INTO hosts (id, seen_at) VALUES ($1, now())
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        &[&host],
    )?;
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM hosts WHERE seen_at > now() - make_interval(secs => $1)",
            &[&(ttl_ms as f64 / 1000.0)],
        )?
        .get(0);
    let share = PARTITIONS.div_ceil(live.max(1) as u32) as usize;

    // Renew what is held; a partition whose row no longer names this host with the same
    // epoch is lost.
    let held: Vec<(u32, i64)> = {
        let held = shared.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter().map(|(p, e)| (*p, *e)).collect()
    };
    let mut lost = Vec::new();
    for (partition, epoch) in &held {
        let renewed = client.execute(
            "UPDATE partitions SET expires_at = now() + make_interval(secs => $4)
             WHERE partition = $1 AND owner = $2 AND epoch = $3",
            &[
                &i64::from(*partition),
                &host,
                epoch,
                &(ttl_ms as f64 / 1000.0),
            ],
        );
        match renewed {
            Ok(0) => lost.push(*partition),
            Ok(_) => {}
            // A lock held by a write in progress: renewed next round.
            Err(e) => tracing::debug!(partition, error = %e, "leases: renewal deferred"),
        }
    }
    if !lost.is_empty() {
        forget(shared, &lost);
    }

    let mut held: Vec<u32> = held
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !lost.contains(p))
        .collect();
    held.sort_unstable();
    if held.len() > share {
        // Give back the highest-numbered beyond the share: forgotten first, so no write
        // of this host starts under a lease it is giving away.
        let extra: Vec<u32> = held.split_off(share);
        forget(shared, &extra);
        for partition in &extra {
            client.execute(
                "UPDATE partitions SET owner = NULL, expires_at = '-infinity'
                 WHERE partition = $1 AND owner = $2",
                &[&i64::from(*partition), &host],
            )?;
        }
        tracing::info!(partitions = ?extra, "leases: gave back beyond the fair share");
    } else if held.len() < share {
        let mut gained = Vec::new();
        let mut holding: Vec<i64> = held.iter().map(|p| i64::from(*p)).collect();
        for _ in held.len()..share {
            // Free, expired, or named after this host but not held: a host restarted
            // under the same name takes its partitions back at once, and the new epoch
            // fences whatever its former life still had in flight.
            let taken = client.query_opt(
                "UPDATE partitions SET owner = $1, epoch = epoch + 1,
                        expires_at = now() + make_interval(secs => $2)
                 WHERE partition = (
                     SELECT partition FROM partitions
                     WHERE (owner IS NULL OR expires_at < now() OR owner = $1)
                       AND NOT (partition = ANY($3))
                     ORDER BY partition LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING partition, epoch",
                &[&host, &(ttl_ms as f64 / 1000.0), &holding],
            );
            match taken {
                Ok(Some(row)) => {
                    let partition: i64 = row.get(0);
                    let epoch: i64 = row.get(1);
                    gained.push((partition as u32, epoch));
                    holding.push(partition);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "leases: a claim failed; trying next round");
                    break;
                }
            }
        }
        if !gained.is_empty() {
            let mut held = shared.held.write().unwrap_or_else(|p| p.into_inner());
            for (partition, epoch) in &gained {
                held.insert(*partition, *epoch);
            }
            drop(held);
            let partitions: Vec<u32> = gained.iter().map(|(p, _)| *p).collect();
            tracing::info!(?partitions, "leases: took partitions");
            let _ = shared.changes.send(LeaseChange::Gained(partitions));
        }
    }
    Ok(())
}

fn forget(shared: &SharedOwnership, partitions: &[u32]) {
    let mut held = shared.held.write().unwrap_or_else(|p| p.into_inner());
    for partition in partitions {
        held.remove(partition);
    }
    drop(held);
    let _ = shared.changes.send(LeaseChange::Lost(partitions.to_vec()));
}

fn release_all(conn: &mut PgConn, ownership: &Ownership) {
    let Some(shared) = &ownership.shared else {
        return;
    };
    let held: Vec<(u32, i64)> = shared
        .held
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (partition, epoch) in held {
        let _ = conn.client.execute(
            "UPDATE partitions SET owner = NULL, expires_at = '-infinity'
             WHERE partition = $1 AND owner = $2 AND epoch = $3",
            &[&i64::from(partition), &shared.host, &epoch],
        );
    }
    let _ = conn
        .client
        .execute("DELETE FROM hosts WHERE id = $1", &[&shared.host]);
}

/// The wake-up thread: takes the rows of `wakeups` for the partitions held, when
/// notified and every [`POLL`].
fn listen(mut conn: PgConn, url: &str, host: &str, ownership: &Ownership, stop: &AtomicU8) {
    use postgres::fallible_iterator::FallibleIterator as _;
    let Some(shared) = &ownership.shared else {
        return;
    };
    let mut last_drain = std::time::Instant::now();
    while stop.load(Ordering::SeqCst) == RUN {
        if conn.client.is_closed() {
            std::thread::sleep(POLL);
            match PgConn::connect_as(url, host).and_then(|mut c| {
                c.client
                    .batch_execute("LISTEN steadfast_wakeups; LISTEN steadfast_status")
                    .map(|()| c)
                    .map_err(Into::into)
            }) {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "wake-ups: cannot reconnect");
                    continue;
                }
            }
        }
        // Wait for a notification (or the poll interval), then take the rest.
        let (mut woken, mut statuses) = (false, Vec::new());
        {
            let mut handle = |note: postgres::Notification| {
                if note.channel() == "steadfast_status" {
                    if let Ok(id) = InstanceId::from_key(note.payload().to_owned())
                        && !statuses.contains(&id)
                    {
                        statuses.push(id);
                    }
                } else {
                    woken = true;
                }
            };
            let mut notifications = conn.client.notifications();
            let first = notifications.timeout_iter(POLL).next();
            if let Ok(Some(first)) = first {
                handle(first);
                let mut more = notifications.iter();
                while let Ok(Some(note)) = more.next() {
                    handle(note);
                }
            }
        }
        if !statuses.is_empty() {
            let _ = shared.changes.send(LeaseChange::Status(statuses));
        }
        if !woken && last_drain.elapsed() < POLL {
            continue;
        }
        last_drain = std::time::Instant::now();
        let held: Vec<i64> = ownership.held().into_iter().map(i64::from).collect();
        if held.is_empty() {
            continue;
        }
        // Only partitions the database still says are this host's: one that lost a lease
        // without noticing yet (frozen, cut off) leaves the new owner's wake-ups alone.
        let taken = conn.client.query(
            "DELETE FROM wakeups WHERE id IN (
                 SELECT w.id FROM wakeups w JOIN partitions p ON p.partition = w.partition
                 WHERE w.partition = ANY($1) AND p.owner = $2 AND p.expires_at > now()
                 ORDER BY w.id LIMIT 1000 FOR UPDATE OF w SKIP LOCKED)
             RETURNING instance",
            &[&held, &host],
        );
        match taken {
            Ok(rows) if !rows.is_empty() => {
                let mut ids: Vec<InstanceId> = Vec::with_capacity(rows.len());
                for row in rows {
                    let key: String = row.get(0);
                    if let Ok(id) = InstanceId::from_key(key)
                        && !ids.contains(&id)
                    {
                        ids.push(id);
                    }
                }
                let _ = shared.changes.send(LeaseChange::Wake(ids));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "wake-ups: cannot read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_never_change_for_a_key() {
        // Stored with every instance: a new build must place old keys where they were.
        assert_eq!(
            partition_of("default/saga-0"),
            partition_of("default/saga-0")
        );
        assert_eq!(partition_of(""), (0xcbf2_9ce4_8422_2325_u64 % 64) as u32);
        assert_eq!(partition_of("default/order-1"), 11);
        let spread: std::collections::HashSet<u32> = (0..1000)
            .map(|i| partition_of(&format!("default/i-{i}")))
            .collect();
        assert_eq!(
            spread.len(),
            PARTITIONS as usize,
            "1,000 keys reach every partition"
        );
    }

    #[test]
    fn host_names_survive_application_name() {
        assert!(check_host_name("host-a.eu_1").is_ok());
        assert!(LeaseConfig::unique_host().len() <= 63);
        assert!(check_host_name(&LeaseConfig::unique_host()).is_ok());
        for bad in ["", "a b", "x'; DROP TABLE partitions; --", &"h".repeat(64)] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
    }
}
