//! Group commit on SQLite: the writes of concurrent requests share one transaction, and so one
//! synced commit.
//!
//! SQLite has one writer per file, and with `synchronous=FULL` every commit syncs the WAL. A
//! write here is a savepoint inside a transaction kept open for the current *batch*: it takes
//! this process's write turn (a fair lock per database file: no write waits in SQLite's busy
//! handler), runs its statements inside `SAVEPOINT`, releases the savepoint, hands the turn on,
//! and waits for the batch's commit. The first member of a batch that gets the turn back while
//! the batch is still open commits it for all: every writer that queued before it has had its
//! turn and joined. Batches so grow with the number of concurrent writers and never wait on a
//! timer, and a lone writer pays one extra hand-off of the turn.
//!
//! A write that is one script ([`SqliteWrite::script`], text made with [`savepointed!`]) sends
//! its savepoint, statements and release to SQLite's connection thread in one hand-off: the
//! turn is held mostly for hand-offs (each wakes a task that then queues behind other
//! requests' work), so the fewer a write makes, the more writes the turn passes per second.
//!
//! Durability is unchanged: `commit` returns only once the transaction holding the write is
//! committed, so a caller never answers before its rows are on disk; when that commit fails,
//! every member of the batch is told its write failed.
//!
//! Failure isolation: a write that is rolled back, fails or is dropped is undone to its
//! savepoint before the next writer starts; the other members of its batch are untouched.
//! Should SQLite abandon the whole transaction (it does on some I/O and memory errors), the
//! savepoint is gone: that is noticed when the write is released or undone, and every member
//! of the batch is told its write failed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard, watch};

/// How a batch ended, for its members: `None` while it is open.
type Outcome = Option<Result<(), String>>;

/// The transaction of the batch being gathered.
struct Open {
    /// Tells the batch apart from the next one on the same file.
    id: u64,
    conn: PoolConnection<Sqlite>,
    /// Writes released into the batch so far.
    members: usize,
    outcome: watch::Sender<Outcome>,
}

/// A database file's write turn and the batch it is gathering.
#[derive(Default)]
struct Batch {
    open: Option<Open>,
    /// A write was dropped inside its savepoint; the next holder of the turn undoes it.
    dangling: bool,
    next_id: u64,
}

type Turn = OwnedMutexGuard<Batch>;

/// A write's statements as one query, for [`SqliteWrite::script`].
pub type SqliteScript = sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>;

/// The text of a script for [`SqliteWrite::script`]: the statements of `$sql` inside the
/// savepoint that isolates a write within its batch, and a `SELECT` of the rows its last
/// statement changed. That is the script's answer: the driver's own count is no use here, as
/// it also counts `SAVEPOINT` and `RELEASE` as having changed what the statement before
/// them changed.
macro_rules! savepointed {
    ($sql:literal) => {
        concat!(
            "SAVEPOINT novads_write; ",
            $sql,
            "; SELECT changes(); RELEASE novads_write"
        )
    };
}
pub(crate) use savepointed;

/// The write turn of the file behind `pool`, shared by every pool on that file in this
/// process (in-memory databases each have a file name of their own).
fn turn_lock(pool: &SqlitePool) -> Arc<TurnLock<Batch>> {
    type Turns = Mutex<HashMap<PathBuf, Arc<TurnLock<Batch>>>>;
    static TURNS: LazyLock<Turns> = LazyLock::new(Turns::default);
    let path = pool.connect_options().get_filename().to_path_buf();
    // The map only ever gains entries, so a panic elsewhere cannot leave it inconsistent.
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Arc::clone(turns.entry(path).or_default())
}

async fn run(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

/// An error for a member of a batch whose commit failed (`sqlx::Error` is not `Clone`).
fn batch_failed(reason: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the group commit holding this write failed: {reason}"
    )))
}

impl Batch {
    /// Ends the open batch with `outcome` (rolling it back unless it committed), telling its
    /// members, and gives the connection back to the pool.
    async fn close(&mut self, outcome: Result<(), String>) {
        self.dangling = false;
        if let Some(mut open) = self.open.take() {
            if outcome.is_err() {
                // Best effort: the transaction may already be gone; the connection must not
                // go back to the pool inside one.
                if run(&mut open.conn, "ROLLBACK").await.is_err() {
                    open.conn.close_on_drop();
                }
            }
            open.outcome.send_replace(Some(outcome));
        }
    }

    /// Undoes a write left inside its savepoint; closes an empty batch (also one whose first
    /// write never got its savepoint) so that it does not hold SQLite's write lock and a
    /// pooled connection until the next writer comes.
    async fn settle(&mut self) {
        let Some(open) = self.open.as_mut() else {
            self.dangling = false;
            return;
        };
        if !self.dangling {
            if open.members == 0 {
                self.close(Err("empty".into())).await;
            }
            return;
        }
        self.dangling = false;
        let undone = async {
            run(&mut open.conn, "ROLLBACK TO novads_write").await?;
            run(&mut open.conn, "RELEASE novads_write").await
        }
        .await;
        match undone {
            Err(e) => self.close(Err(e.to_string())).await,
            Ok(()) if open.members == 0 => self.close(Err("empty".into())).await,
            Ok(()) => {}
        }
    }

    /// Starts a batch (its `BEGIN IMMEDIATE` transaction) unless one is open.
    async fn open_batch(&mut self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        if self.open.is_none() {
            // A connection is taken only while holding the turn, and given back at the batch's
            // end: never held while queueing.
            let mut conn = pool.acquire().await?;
            run(&mut conn, "BEGIN IMMEDIATE").await?;
            let id = self.next_id;
            self.next_id += 1;
            self.open = Some(Open {
                id,
                conn,
                members: 0,
                outcome: watch::channel(None).0,
            });
        }
        Ok(())
    }

    /// Commits the open batch for all its members.
    async fn commit(&mut self) -> Result<(), sqlx::Error> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        match run(&mut open.conn, "COMMIT").await {
            Ok(()) => {
                self.close(Ok(())).await;
                Ok(())
            }
            Err(e) => {
                self.close(Err(e.to_string())).await;
                Err(e)
            }
        }
    }
}

/// One write in progress: the write turn, inside a savepoint of the open batch.
pub struct SqliteWrite {
    /// `Some` from `begin` until `commit` or `rollback` consume the write.
    turn: Option<Turn>,
}

impl SqliteWrite {
    /// Waits for the write turn of `pool`'s file and opens a savepoint in the current batch
    /// (starting the batch's `BEGIN IMMEDIATE` transaction if there is none).
    pub async fn begin(pool: &SqlitePool) -> Result<Self, sqlx::Error> {
        let turn = turn_lock(pool).lock_owned().await;
        // The statements run in a task of their own: a caller that stops waiting must not
        // leave a transaction half begun, or a connection back in the pool inside one.
        // Should the caller stop waiting, the write made by the task is dropped with the task's
        // output, and undone (see `Drop`).
        tokio::spawn(open_savepoint(turn, pool.clone()))
            .await
            .map_err(|e| batch_failed(&e.to_string()))?
    }

    /// Runs `script` — made with `savepointed!`, so that it isolates itself in its batch — as a
    /// write of its own and returns once its batch is committed, with the number of rows the
    /// script's last statement changed. One hand-off to SQLite's connection thread instead of one per statement
    /// and two more for the savepoint: what the write turn is held for is mostly those
    /// hand-offs.
    pub async fn script(pool: &SqlitePool, script: SqliteScript) -> Result<u64, sqlx::Error> {
        let turn = turn_lock(pool).lock_owned().await;
        // In a task of its own, as `begin` and `commit`: a caller that stops waiting leaves
        // neither a half-run script nor an uncommitted batch.
        tokio::spawn(run_script(turn, pool.clone(), script))
            .await
            .map_err(|e| batch_failed(&e.to_string()))?
    }

    /// The connection to run the write's statements on.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        // `turn` is `Some` and its batch open for as long as the write exists: `begin` opens
        // the batch before making the write, only the holder of the turn closes a batch, and
        // this write holds the turn until `commit` or `rollback` consume it.
        match self.turn.as_mut().and_then(|turn| turn.open.as_mut()) {
            Some(open) => &mut open.conn,
            None => unreachable!("a write holds the turn of an open batch"),
        }
    }

    /// Undoes the write; the rest of its batch goes on.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        if let Some(mut turn) = self.turn.take() {
            tokio::spawn(async move { turn.settle().await })
                .await
                .map_err(|e| batch_failed(&e.to_string()))?;
        }
        Ok(())
    }

    /// Releases the write into its batch and returns once the batch is committed.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(turn) = self.turn.take() else {
            return Ok(());
        };
        // In a task of its own: should the caller stop waiting, the write still joins its
        // batch, the batch is still committed, and SQLite's write lock is not kept.
        tokio::spawn(release(turn))
            .await
            .map_err(|e| batch_failed(&e.to_string()))?
    }
}

/// Undoes what a dropped write left, and opens a savepoint in the current batch (starting the
/// batch's `BEGIN IMMEDIATE` transaction if there is none).
async fn open_savepoint(mut turn: Turn, pool: SqlitePool) -> Result<SqliteWrite, sqlx::Error> {
    turn.settle().await;
    turn.open_batch(&pool).await?;
    let batch = &mut *turn;
    if let Some(open) = batch.open.as_mut() {
        if let Err(e) = run(&mut open.conn, "SAVEPOINT novads_write").await {
            if open.members == 0 {
                batch.close(Err(e.to_string())).await;
            }
            return Err(e);
        }
        batch.dangling = true;
    }
    Ok(SqliteWrite { turn: Some(turn) })
}

/// Releases the write holding `turn` into its batch, hands the turn on and waits for the
/// batch's commit.
async fn release(mut turn: Turn) -> Result<(), sqlx::Error> {
    let batch = &mut *turn;
    let Some(open) = batch.open.as_mut() else {
        return Err(batch_failed(
            "the batch ended before the write was released",
        ));
    };
    if let Err(e) = run(&mut open.conn, "RELEASE novads_write").await {
        // The savepoint is gone: SQLite abandoned the whole transaction.
        batch.close(Err(e.to_string())).await;
        return Err(e);
    }
    join_batch(turn).await
}

/// Counts the write that just released its savepoint as a member of the open batch, hands the
/// turn on and waits for the batch's commit.
async fn join_batch(mut turn: Turn) -> Result<(), sqlx::Error> {
    turn.dangling = false;
    let Some(open) = turn.open.as_mut() else {
        return Err(batch_failed("the batch ended before the write joined it"));
    };
    open.members += 1;
    let (id, outcome) = (open.id, open.outcome.subscribe());
    let lock = Arc::clone(OwnedMutexGuard::mutex(&turn));
    drop(turn);
    await_commit(lock, id, outcome).await
}

/// Runs a write that is one script, `SAVEPOINT` and `RELEASE` included, as one hand-off to
/// SQLite's connection thread, then hands the turn on and waits for the batch's commit.
async fn run_script(
    mut turn: Turn,
    pool: SqlitePool,
    script: SqliteScript,
) -> Result<u64, sqlx::Error> {
    turn.settle().await;
    turn.open_batch(&pool).await?;
    let batch = &mut *turn;
    let Some(open) = batch.open.as_mut() else {
        return Err(batch_failed("no batch to write in"));
    };
    // Should the script stop part way, what it did is undone to its savepoint (or, when the
    // savepoint is gone with the whole transaction, the batch fails) before the turn moves on.
    batch.dangling = true;
    let selected = match script.fetch_all(&mut *open.conn).await {
        Ok(rows) => rows,
        Err(e) => {
            batch.settle().await;
            return Err(e);
        }
    };
    join_batch(turn).await?;
    // Not made with `savepointed!` if there is no answer: the write stands (it released its
    // savepoint), but its caller learns nothing it could act on.
    selected
        .last()
        .and_then(|row| row.try_get::<i64, _>(0).ok())
        .and_then(|changed| u64::try_from(changed).ok())
        .ok_or_else(|| {
            sqlx::Error::Protocol("a write script ends without its SELECT changes()".into())
        })
}

/// Waits until batch `id` is committed by another member, or commits it on getting the turn
/// back first.
async fn await_commit(
    lock: Arc<TurnLock<Batch>>,
    id: u64,
    outcome: watch::Receiver<Outcome>,
) -> Result<(), sqlx::Error> {
    let ended = |outcome: &Outcome| match outcome {
        Some(Ok(())) => Some(Ok(())),
        Some(Err(reason)) => Some(Err(batch_failed(reason))),
        None => None,
    };
    let mut waiting = outcome.clone();
    // The outcome is copied out at once: a borrowed one must not live across an await.
    let committed = async move { waiting.wait_for(Option::is_some).await.map(|v| v.clone()) };
    tokio::select! {
        biased;
        changed = committed => match changed {
            Ok(value) => ended(&value).unwrap_or(Ok(())),
            // The sender went with a batch that closed, which always sends first.
            Err(_) => Err(batch_failed("the batch was dropped")),
        },
        mut turn = lock.lock_owned() => {
            turn.settle().await;
            if turn.open.as_ref().is_some_and(|open| open.id == id) {
                turn.commit().await
            } else {
                // Closed while we queued: the outcome was sent before the turn was handed on.
                ended(&outcome.borrow()).unwrap_or_else(|| Err(batch_failed("no outcome")))
            }
        }
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        // Dropped inside its savepoint (an error returned early, a cancelled request): the
        // write is undone by the next holder of the turn, and at once by a task of its own so
        // that a batch with nothing else in it does not keep the write lock.
        let Some(turn) = self.turn.take() else {
            return;
        };
        let lock = Arc::clone(OwnedMutexGuard::mutex(&turn));
        drop(turn);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { lock.lock_owned().await.settle().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db =
            crate::db::Database::open(&format!("sqlite://{}/group.db", dir.path().display()), None)
                .await
                .expect("open");
        let crate::db::Database::Sqlite(pool) = db else {
            unreachable!("a sqlite URL")
        };
        sqlx::query("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("table");
        (dir, pool)
    }

    async fn values(pool: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT v FROM t ORDER BY v")
            .fetch_all(pool)
            .await
            .expect("select")
    }

    async fn insert(pool: &SqlitePool, v: i64) -> Result<(), sqlx::Error> {
        let mut write = SqliteWrite::begin(pool).await?;
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind(v)
            .execute(write.connection())
            .await?;
        write.commit().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_and_a_failing_one_leaves_the_others_alone() {
        let (_dir, pool) = pool().await;
        insert(&pool, 7).await.expect("first");
        let mut tasks = Vec::new();
        for v in 0..40 {
            let pool = pool.clone();
            // 7 again: the primary key refuses it, inside a batch with others.
            let v = if v == 20 { 7 } else { 100 + v };
            tasks.push(tokio::spawn(async move { (v, insert(&pool, v).await) }));
        }
        let mut refused = 0;
        for task in tasks {
            let (v, result) = task.await.expect("task");
            match result {
                Ok(()) => assert_ne!(v, 7),
                Err(_) => {
                    assert_eq!(v, 7);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 1);
        let stored = values(&pool).await;
        assert_eq!(stored.len(), 40, "{stored:?}");
    }

    /// Nothing is left open: another connection can take the write lock at once.
    async fn assert_write_lock_free(pool: &SqlitePool) {
        let mut other = pool.acquire().await.expect("connection");
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            run(&mut other, "BEGIN IMMEDIATE"),
        )
        .await
        .expect("the write lock is free")
        .expect("begin");
        run(&mut other, "ROLLBACK").await.expect("rollback");
    }

    /// A script writing `v` and `v + 1000`: two rows, or none when either is taken; its answer
    /// is the second insert's row count.
    fn pair(v: i64) -> SqliteScript {
        sqlx::query(savepointed!(
            "INSERT INTO t (v) VALUES ($1); INSERT INTO t (v) VALUES ($1 + 1000)"
        ))
        .bind(v)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_share_batches_with_writes_and_one_failing_part_way_is_undone_alone() {
        let (_dir, pool) = pool().await;
        // 1007 taken: the script for 7 fails at its second statement, after its first ran.
        insert(&pool, 1007).await.expect("first");
        let mut tasks = Vec::new();
        for v in 0..40_i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let result = match v % 2 {
                    0 => SqliteWrite::script(&pool, pair(200 + v / 2)).await,
                    _ => insert(&pool, 100 + v).await.map(|()| 1),
                };
                (v, result)
            }));
        }
        tasks.push(tokio::spawn({
            let pool = pool.clone();
            async move { (-1, SqliteWrite::script(&pool, pair(7)).await) }
        }));
        for task in tasks {
            let (v, result) = task.await.expect("task");
            match (v, result) {
                (-1, Err(_)) => {}
                (-1, Ok(rows)) => panic!("the script for 7 wrote {rows} rows"),
                (v, Ok(rows)) => assert_eq!(rows, 1, "{v}"),
                (v, Err(e)) => panic!("write {v}: {e}"),
            }
        }
        let stored = values(&pool).await;
        // 20 scripts × 2 rows, 20 single inserts and the first one; nothing of the script for 7.
        assert_eq!(stored.len(), 61, "{stored:?}");
        assert!(!stored.contains(&7));
    }

    #[tokio::test]
    async fn a_script_whose_caller_stops_waiting_is_still_committed_and_frees_the_file() {
        let (_dir, pool) = pool().await;
        let script = SqliteWrite::script(&pool, pair(3));
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), script).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(values(&pool).await, [3, 1003]);
        assert_write_lock_free(&pool).await;
    }

    #[tokio::test]
    async fn a_rolled_back_or_dropped_write_is_undone_and_frees_the_file() {
        let (_dir, pool) = pool().await;
        let mut write = SqliteWrite::begin(&pool).await.expect("begin");
        sqlx::query("INSERT INTO t (v) VALUES (1)")
            .execute(write.connection())
            .await
            .expect("insert");
        write.rollback().await.expect("rollback");
        {
            let mut write = SqliteWrite::begin(&pool).await.expect("begin");
            sqlx::query("INSERT INTO t (v) VALUES (2)")
                .execute(write.connection())
                .await
                .expect("insert");
        }
        insert(&pool, 3).await.expect("insert after");
        assert_eq!(values(&pool).await, [3]);
        assert_write_lock_free(&pool).await;
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_still_gets_its_write_committed() {
        let (_dir, pool) = pool().await;
        let mut write = SqliteWrite::begin(&pool).await.expect("begin");
        sqlx::query("INSERT INTO t (v) VALUES (5)")
            .execute(write.connection())
            .await
            .expect("insert");
        // Polled once, then dropped: the release ran, the commit is left to the task.
        let commit = write.commit();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), commit).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(values(&pool).await, [5]);
    }
}
