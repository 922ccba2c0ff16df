//! SQLite persistence: schema, tenant-scoped queries and the idempotency
//! table. Every function here is synchronous and runs on a blocking thread
//! via [`Store::read`] or [`Store::write`]; nothing here knows about HTTP
//! beyond [`ApiError`].
//!
//! A file database is opened in WAL mode as one writer connection plus a
//! small pool of read-only connections: WAL lets readers run beside the
//! writer and each other, so list calls no longer queue behind message
//! inserts. SQLite allows one writer at a time anyway, so a single writer
//! connection behind a mutex costs nothing and keeps every
//! lookup-then-insert (idempotency) in one serialised transaction. An
//! in-memory database is private to its connection, so it has no readers
//! and every call uses the writer.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::DbLocation;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    metadata TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_user ON tasks(user_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_title ON tasks(user_id, title, seq);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    content TEXT NOT NULL,
    actor_type TEXT,
    actor_id TEXT,
    agent_role TEXT,
    attachments TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_task ON messages(user_id, task_id, seq);
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_task ON documents(user_id, task_id, seq);
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    session_key TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications(delivered_at, seq);
CREATE INDEX IF NOT EXISTS notifications_pending_by_user
    ON notifications(user_id, seq) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    user_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, endpoint, key)
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency(created_at);
CREATE TABLE IF NOT EXISTS tool_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    call_id TEXT NOT NULL,
    agent_role TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    context TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    consumed_at INTEGER,
    consume_key TEXT
);
CREATE INDEX IF NOT EXISTS tool_requests_by_user ON tool_requests(user_id, seq);
";

/// Columns added after the first release; added to an older database on
/// open (`CREATE TABLE IF NOT EXISTS` does not add columns).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("notifications", "task_id", "TEXT"),
    ("notifications", "metadata", "TEXT"),
];

/// Read-only connections of a file database. Four keep two cores busy with
/// reads while a write is in progress without holding many file handles.
const READERS: usize = 4;

/// Expired idempotency records deleted per sweep, so one sweep never holds
/// the writer for long however many records expired at once.
pub(crate) const SWEEP_BATCH: usize = 1000;

/// Least time between two sweeps of expired idempotency records.
const SWEEP_EVERY_MS: i64 = 60_000;

/// The writer connection, the readers and the idempotency retention.
pub(crate) struct Store {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: AtomicUsize,
    /// Idempotency records older than this are forgotten.
    retention_ms: i64,
    /// When the last sweep of expired records ran (ms since the epoch).
    last_sweep: Arc<AtomicI64>,
}

fn open_writer(location: &DbLocation) -> crate::Result<Connection> {
    let conn = match location {
        DbLocation::Memory => Connection::open_in_memory()?,
        DbLocation::File(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let conn = Connection::open(path)?;
            // WAL keeps readers and the writer out of each other's way and
            // survives crashes; NORMAL sync is durable at checkpoints.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn
        }
    };
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    for (table, column, kind) in ADDED_COLUMNS {
        let present = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) and migrates the database, then opens the
    /// readers of a file database. `retention` is how long idempotency
    /// records are kept.
    pub(crate) fn open(location: &DbLocation, retention: Duration) -> crate::Result<Self> {
        let writer = open_writer(location)?;
        let readers: Vec<Mutex<Connection>> = match location {
            DbLocation::Memory => Vec::new(),
            DbLocation::File(path) => (0..READERS)
                .map(|_| {
                    // Opened after the writer set WAL mode and created the
                    // schema; read-only, so a bug cannot write around the
                    // writer's transactions.
                    let conn = Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(Duration::from_secs(5))?;
                    Ok(Mutex::new(conn))
                })
                .collect::<crate::Result<_>>()?,
        };
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: readers.into(),
            next_reader: AtomicUsize::new(0),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            last_sweep: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Idempotency records older than this many milliseconds are ignored
    /// and swept.
    pub(crate) fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Runs `f` with the writer connection on a blocking thread, so the
    /// async runtime never waits on SQLite. Every write goes through here;
    /// about once a minute it also deletes a bounded batch of expired
    /// idempotency records (after `f`, so the caller is not delayed by it
    /// more than once a minute, and with no timer task).
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ApiError> + Send + 'static,
    {
        let conn = Arc::clone(&self.writer);
        let last_sweep = Arc::clone(&self.last_sweep);
        let retention = self.retention_ms;
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let result = f(&mut guard);
            let now = crate::api::now_ms();
            let last = last_sweep.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= SWEEP_EVERY_MS
                && last_sweep
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                && let Err(e) =
                    sweep_idempotency(&guard, now.saturating_sub(retention), SWEEP_BATCH)
            {
                tracing::warn!(error = %e.error, "idempotency sweep failed");
            }
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("database task failed: {e}")))?
    }

    /// Runs `f` with a read-only connection on a blocking thread: the first
    /// idle reader, or (all busy) the next one in turn. Without readers (an
    /// in-memory database) it uses the writer.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.write(move |conn| f(conn)).await;
        }
        let readers = Arc::clone(&self.readers);
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let n = readers.len();
            for i in 0..n {
                if let Ok(guard) = readers[(start + i) % n].try_lock() {
                    return f(&guard);
                }
            }
            let guard = readers[start % n]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            f(&guard)
        })
        .await
        .map_err(|e| ApiError::internal(format!("database task failed: {e}")))?
    }
}

/// Deletes at most `batch` idempotency records created before `before`
/// (ms since the epoch); returns how many it deleted.
pub(crate) fn sweep_idempotency(
    conn: &Connection,
    before: i64,
    batch: usize,
) -> Result<usize, ApiError> {
    Ok(conn.execute(
        "DELETE FROM idempotency WHERE rowid IN
            (SELECT rowid FROM idempotency WHERE created_at < ?1 LIMIT ?2)",
        params![before, i64::try_from(batch).unwrap_or(i64::MAX)],
    )?)
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(format!("database error: {e}"))
    }
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// A fresh id with a readable prefix.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Opaque pagination cursor: the last row's sequence number.
pub(crate) fn encode_cursor(seq: i64) -> String {
    format!("c{seq:x}")
}

/// Parses a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    cursor
        .strip_prefix('c')
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request("invalid cursor", "invalid_cursor"))
}

/// Where an idempotent create is recorded and when its records expire.
pub(crate) struct IdemScope<'a> {
    /// The tenant.
    pub user_id: &'a str,
    /// The endpoint (`tasks`, `messages`, ...): keys are per endpoint.
    pub endpoint: &'a str,
    /// The caller's key; without one the create is not recorded.
    pub key: Option<&'a str>,
    /// Hash of the payload without its key.
    pub fingerprint: &'a str,
    /// Now, in ms since the epoch (the record's `created_at`).
    pub now: i64,
    /// Records created before this (ms) have expired: a repeat then creates
    /// anew, as if the key had never been used.
    pub expired_before: i64,
}

/// Runs `create` at most once per `(user, endpoint, key)` within the
/// retention window: a repeat with the same fingerprint answers the stored
/// response, a different fingerprint is a 409. Lookup, create and record
/// happen in one transaction on the single writer connection, so concurrent
/// repeats cannot both create. An expired record is deleted on lookup, so
/// expiry is exact even between sweeps.
pub(crate) fn idempotent(
    conn: &mut Connection,
    scope: &IdemScope<'_>,
    create: impl FnOnce(&Transaction<'_>) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let IdemScope {
        user_id,
        endpoint,
        key,
        fingerprint,
        now,
        expired_before,
    } = *scope;
    let tx = conn.transaction()?;
    if let Some(key) = key {
        let stored: Option<(String, String, i64)> = tx
            .prepare_cached(
                "SELECT fingerprint, response, created_at FROM idempotency
                 WHERE user_id = ?1 AND endpoint = ?2 AND key = ?3",
            )?
            .query_row(params![user_id, endpoint, key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let stored = match stored {
            Some((_, _, created_at)) if created_at < expired_before => {
                tx.execute(
                    "DELETE FROM idempotency WHERE user_id = ?1 AND endpoint = ?2 AND key = ?3",
                    params![user_id, endpoint, key],
                )?;
                None
            }
            other => other.map(|(fp, response, _)| (fp, response)),
        };
        if let Some((stored_fp, response)) = stored {
            if stored_fp != fingerprint {
                return Err(ApiError::new(
                    409,
                    "idempotency_key was already used with a different payload",
                    "idempotency_conflict",
                ));
            }
            return serde_json::from_str(&response)
                .map_err(|e| ApiError::internal(format!("stored response is corrupt: {e}")));
        }
    }
    let value = create(&tx)?;
    if let Some(key) = key {
        tx.prepare_cached(
            "INSERT INTO idempotency (user_id, endpoint, key, fingerprint, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            user_id,
            endpoint,
            key,
            fingerprint,
            value.to_string(),
            now
        ])?;
    }
    tx.commit()?;
    Ok(value)
}

/// A task row as JSON.
pub(crate) fn task_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let metadata: Option<String> = r.get("metadata")?;
    Ok(json!({
        "id": r.get::<_, String>("id")?,
        "title": r.get::<_, String>("title")?,
        "status": r.get::<_, String>("status")?,
        "description": r.get::<_, Option<String>>("description")?,
        "metadata": metadata.and_then(|m| serde_json::from_str::<Value>(&m).ok()),
        "created_at": rfc3339(r.get("created_at")?),
    }))
}

/// Fields of a task to create (already validated).
pub(crate) struct NewTaskRow {
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub metadata: Option<Value>,
}

pub(crate) fn insert_task(
    tx: &Transaction<'_>,
    user_id: &str,
    t: &NewTaskRow,
    now: i64,
) -> Result<Value, ApiError> {
    let id = new_id("task");
    tx.prepare_cached(
        "INSERT INTO tasks (id, user_id, title, description, status, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        user_id,
        t.title,
        t.description,
        t.status,
        t.metadata.as_ref().map(Value::to_string),
        now
    ])?;
    Ok(tx
        .prepare_cached("SELECT * FROM tasks WHERE id = ?1")?
        .query_row([&id], task_json)?)
}

/// One page of rows after `after` (a sequence number), as `{items, next_cursor}`.
fn page(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    limit: u32,
    to_json: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Value>,
) -> Result<Value, ApiError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut items = Vec::new();
    let mut last_seq = 0i64;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() as u32 == limit {
            more = true;
            break;
        }
        last_seq = row.get("seq")?;
        items.push(to_json(row)?);
    }
    let next = more.then(|| encode_cursor(last_seq));
    Ok(json!({ "items": items, "next_cursor": next }))
}

/// One page of the tenant's tasks; with `title`, only tasks with exactly
/// that title (the contract's optional `task_title_filter`).
pub(crate) fn list_tasks(
    conn: &Connection,
    user_id: &str,
    title: Option<&str>,
    after: i64,
    limit: u32,
) -> Result<Value, ApiError> {
    let rows = i64::from(limit) + 1;
    match title {
        None => page(
            conn,
            "SELECT * FROM tasks WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            &[&user_id, &after, &rows],
            limit,
            task_json,
        ),
        Some(title) => page(
            conn,
            "SELECT * FROM tasks WHERE user_id = ?1 AND title = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            &[&user_id, &title, &after, &rows],
            limit,
            task_json,
        ),
    }
}

/// Whether `task_id` belongs to `user_id` (another tenant's task is
/// indistinguishable from a missing one).
pub(crate) fn task_exists(
    conn: &Connection,
    user_id: &str,
    task_id: &str,
) -> Result<bool, ApiError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1 AND user_id = ?2")?
        .exists(params![task_id, user_id])?)
}

fn message_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let attachments: Option<String> = r.get("attachments")?;
    Ok(json!({
        "id": r.get::<_, String>("id")?,
        "task_id": r.get::<_, String>("task_id")?,
        "content": r.get::<_, String>("content")?,
        "actor_type": r.get::<_, Option<String>>("actor_type")?,
        "actor_id": r.get::<_, Option<String>>("actor_id")?,
        "agent_role": r.get::<_, Option<String>>("agent_role")?,
        "attachments": attachments.and_then(|a| serde_json::from_str::<Value>(&a).ok()),
        "created_at": rfc3339(r.get("created_at")?),
    }))
}

/// Fields of a message to create (already validated).
pub(crate) struct NewMessageRow {
    pub task_id: String,
    pub content: String,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub agent_role: Option<String>,
    pub attachments: Option<Value>,
}

pub(crate) fn insert_message(
    tx: &Transaction<'_>,
    user_id: &str,
    m: &NewMessageRow,
    now: i64,
) -> Result<Value, ApiError> {
    if !task_exists(tx, user_id, &m.task_id)? {
        return Err(ApiError::not_found("task not found"));
    }
    let id = new_id("msg");
    tx.prepare_cached(
        "INSERT INTO messages (id, user_id, task_id, content, actor_type, actor_id, agent_role, attachments, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            id,
            user_id,
            m.task_id,
            m.content,
            m.actor_type,
            m.actor_id,
            m.agent_role,
            m.attachments.as_ref().map(Value::to_string),
            now
        ])?;
    Ok(tx
        .prepare_cached("SELECT * FROM messages WHERE id = ?1")?
        .query_row([&id], message_json)?)
}

pub(crate) fn list_messages(
    conn: &Connection,
    user_id: &str,
    task_id: &str,
    after: i64,
    limit: u32,
) -> Result<Value, ApiError> {
    if !task_exists(conn, user_id, task_id)? {
        return Err(ApiError::not_found("task not found"));
    }
    page(
        conn,
        "SELECT * FROM messages WHERE user_id = ?1 AND task_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        &[&user_id, &task_id, &after, &(i64::from(limit) + 1)],
        limit,
        message_json,
    )
}

pub(crate) fn document_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>("id")?,
        "task_id": r.get::<_, String>("task_id")?,
        "title": r.get::<_, String>("title")?,
        "content": r.get::<_, String>("content")?,
        "doc_type": r.get::<_, String>("doc_type")?,
        "created_at": rfc3339(r.get("created_at")?),
    }))
}

/// Fields of a document to create (already validated).
pub(crate) struct NewDocumentRow {
    pub task_id: String,
    pub title: String,
    pub content: String,
    pub doc_type: String,
}

pub(crate) fn insert_document(
    tx: &Transaction<'_>,
    user_id: &str,
    d: &NewDocumentRow,
    now: i64,
) -> Result<Value, ApiError> {
    if !task_exists(tx, user_id, &d.task_id)? {
        return Err(ApiError::not_found("task not found"));
    }
    let id = new_id("doc");
    tx.prepare_cached(
        "INSERT INTO documents (id, user_id, task_id, title, content, doc_type, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id, user_id, d.task_id, d.title, d.content, d.doc_type, now
    ])?;
    Ok(tx
        .prepare_cached("SELECT * FROM documents WHERE id = ?1")?
        .query_row([&id], document_json)?)
}

pub(crate) fn list_documents(
    conn: &Connection,
    user_id: &str,
    task_id: &str,
    after: i64,
    limit: u32,
) -> Result<Value, ApiError> {
    if !task_exists(conn, user_id, task_id)? {
        return Err(ApiError::not_found("task not found"));
    }
    page(
        conn,
        "SELECT * FROM documents WHERE user_id = ?1 AND task_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        &[&user_id, &task_id, &after, &(i64::from(limit) + 1)],
        limit,
        document_json,
    )
}

/// A notification to queue (already validated).
pub(crate) struct NewNotificationRow {
    pub session_key: String,
    pub content: String,
    /// Task the reply belongs on, passed through to the delivery.
    pub task_id: Option<String>,
    /// Object passed through to the delivery.
    pub metadata: Option<Value>,
}

/// Queues a notification for dispatch.
pub(crate) fn insert_notification(
    tx: &Transaction<'_>,
    user_id: &str,
    n: &NewNotificationRow,
    now: i64,
) -> Result<Value, ApiError> {
    let id = new_id("ntf");
    tx.prepare_cached(
        "INSERT INTO notifications (id, user_id, session_key, content, task_id, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
            id,
            user_id,
            n.session_key,
            n.content,
            n.task_id,
            n.metadata.as_ref().map(Value::to_string),
            now
        ])?;
    let mut v = json!({
        "notification_id": id,
        "user_id": user_id,
        "session_key": n.session_key,
        "content": n.content,
        "created_at": rfc3339(now),
    });
    add_optional(
        &mut v,
        n.task_id.clone().map(Value::String),
        n.metadata.clone(),
    );
    Ok(v)
}

/// Adds `task_id` and `metadata` to a delivery when present (absent keys
/// rather than nulls, as the contract's optional fields).
fn add_optional(v: &mut Value, task_id: Option<Value>, metadata: Option<Value>) {
    if let Some(map) = v.as_object_mut() {
        if let Some(t) = task_id {
            map.insert("task_id".into(), t);
        }
        if let Some(m) = metadata {
            map.insert("metadata".into(), m);
        }
    }
}

/// Pending deliveries, fair across tenants: the `limit_users` users whose
/// oldest pending notification is oldest, then up to `limit_notifications`
/// of each, oldest first. (The old single scan of the oldest 10,000 rows let
/// one tenant with many stuck notifications hide every other tenant.) Both
/// queries read the partial index of pending notifications only.
pub(crate) fn undelivered(
    conn: &Connection,
    limit_users: usize,
    limit_notifications: usize,
) -> Result<Value, ApiError> {
    let users: Vec<String> = {
        let mut stmt = conn.prepare_cached(
            "SELECT user_id FROM notifications WHERE delivered_at IS NULL
             GROUP BY user_id ORDER BY MIN(seq) LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit_users).unwrap_or(i64::MAX)], |r| {
            r.get(0)
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_id, session_key, content, task_id, metadata FROM notifications
         WHERE user_id = ?1 AND delivered_at IS NULL ORDER BY seq LIMIT ?2",
    )?;
    let mut deliveries = Vec::new();
    for user in &users {
        let mut rows = stmt.query(params![
            user,
            i64::try_from(limit_notifications).unwrap_or(i64::MAX)
        ])?;
        while let Some(r) = rows.next()? {
            let mut v = json!({
                "notification_id": r.get::<_, String>(0)?,
                "user_id": r.get::<_, String>(1)?,
                "session_key": r.get::<_, String>(2)?,
                "content": r.get::<_, String>(3)?,
            });
            let metadata: Option<String> = r.get(5)?;
            add_optional(
                &mut v,
                r.get::<_, Option<String>>(4)?.map(Value::String),
                metadata.and_then(|m| serde_json::from_str(&m).ok()),
            );
            deliveries.push(v);
        }
    }
    Ok(json!({ "deliveries": deliveries }))
}

/// Marks one notification delivered; repeating it is harmless. Unknown id
/// or another user's notification → 404.
pub(crate) fn mark_delivered(
    conn: &Connection,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM notifications WHERE id = ?1 AND user_id = ?2")?
        .exists(params![id, user_id])?;
    if !found {
        return Err(ApiError::not_found("notification not found"));
    }
    conn.execute(
        "UPDATE notifications SET delivered_at = ?3
         WHERE id = ?1 AND user_id = ?2 AND delivered_at IS NULL",
        params![id, user_id, now],
    )?;
    Ok(json!({ "status": "delivered", "notification_id": id }))
}

/// A tool request row as JSON; optional fields that are unset are left
/// out.
fn tool_request_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let arguments: String = r.get("arguments")?;
    let mut v = json!({
        "id": r.get::<_, String>("id")?,
        "task_id": r.get::<_, String>("task_id")?,
        "tool": r.get::<_, String>("tool")?,
        "arguments": serde_json::from_str::<Value>(&arguments).unwrap_or_else(|_| json!({})),
        "call_id": r.get::<_, String>("call_id")?,
        "status": r.get::<_, String>("status")?,
        "created_at": rfc3339(r.get("created_at")?),
    });
    if let Some(map) = v.as_object_mut() {
        for text in ["agent_role", "reason"] {
            if let Some(t) = r.get::<_, Option<String>>(text)? {
                map.insert(text.into(), Value::String(t));
            }
        }
        for at in ["resolved_at", "consumed_at"] {
            if let Some(ms) = r.get::<_, Option<i64>>(at)? {
                map.insert(at.into(), Value::String(rfc3339(ms)));
            }
        }
        if let Some(c) = r.get::<_, Option<String>>("context")?
            && let Ok(c) = serde_json::from_str::<Value>(&c)
        {
            map.insert("context".into(), c);
        }
    }
    Ok(v)
}

/// A tool request to create (already validated).
pub(crate) struct NewToolRequestRow {
    pub task_id: String,
    pub tool: String,
    pub arguments: Value,
    pub call_id: String,
    pub agent_role: Option<String>,
    pub context: Option<Value>,
}

/// Creates a pending tool request on one of the tenant's tasks (404 for
/// another tenant's or an unknown task).
pub(crate) fn insert_tool_request(
    tx: &Transaction<'_>,
    user_id: &str,
    t: &NewToolRequestRow,
    now: i64,
) -> Result<Value, ApiError> {
    if !task_exists(tx, user_id, &t.task_id)? {
        return Err(ApiError::not_found("task not found"));
    }
    let id = new_id("tr");
    tx.prepare_cached(
        "INSERT INTO tool_requests
            (id, user_id, task_id, tool, arguments, call_id, agent_role, status, context, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9)",
    )?
    .execute(params![
        id,
        user_id,
        t.task_id,
        t.tool,
        t.arguments.to_string(),
        t.call_id,
        t.agent_role,
        t.context.as_ref().map(Value::to_string),
        now
    ])?;
    Ok(tx
        .prepare_cached("SELECT * FROM tool_requests WHERE id = ?1")?
        .query_row([&id], tool_request_json)?)
}

/// One page of the tenant's tool requests, oldest first, optionally only
/// those in `status` and/or of `task_id`.
pub(crate) fn list_tool_requests(
    conn: &Connection,
    user_id: &str,
    status: Option<&str>,
    task_id: Option<&str>,
    after: i64,
    limit: u32,
) -> Result<Value, ApiError> {
    page(
        conn,
        "SELECT * FROM tool_requests WHERE user_id = ?1 AND seq > ?2
            AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR task_id = ?4)
         ORDER BY seq LIMIT ?5",
        &[&user_id, &after, &status, &task_id, &(i64::from(limit) + 1)],
        limit,
        tool_request_json,
    )
}

/// One of the tenant's tool requests; another tenant's is a 404 like an
/// unknown id.
pub(crate) fn get_tool_request(
    conn: &Connection,
    user_id: &str,
    id: &str,
) -> Result<Value, ApiError> {
    conn.prepare_cached("SELECT * FROM tool_requests WHERE id = ?1 AND user_id = ?2")?
        .query_row(params![id, user_id], tool_request_json)
        .optional()?
        .ok_or_else(|| ApiError::not_found("tool request not found"))
}

/// A decision on a tool request.
pub(crate) struct Resolution {
    /// `approved` or `rejected`.
    pub status: &'static str,
    pub reason: Option<String>,
    /// Queue a notification for the run's session (when dispatch is on).
    pub notify: bool,
}

/// Approves or rejects a pending tool request (409
/// `tool_request_resolved` otherwise) and, in the same transaction, queues
/// the notification that resumes the run: for the session
/// `user:<user_id>:<agent_role>` (the session the daemon used, as its
/// token's role is the session's role), on the request's task, with
/// `metadata.tool_request_id`.
pub(crate) fn resolve_tool_request(
    conn: &mut Connection,
    user_id: &str,
    id: &str,
    decision: &Resolution,
    now: i64,
) -> Result<Value, ApiError> {
    let tx = conn.transaction()?;
    let row: Option<(String, String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT status, tool, task_id, agent_role FROM tool_requests
             WHERE id = ?1 AND user_id = ?2",
        )?
        .query_row(params![id, user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((status, tool, task_id, role)) = row else {
        return Err(ApiError::not_found("tool request not found"));
    };
    if status != "pending" {
        return Err(ApiError::new(
            409,
            format!("tool request is already {status}; only a pending request can be resolved"),
            "tool_request_resolved",
        ));
    }
    tx.prepare_cached(
        "UPDATE tool_requests SET status = ?3, reason = ?4, resolved_at = ?5
         WHERE id = ?1 AND user_id = ?2",
    )?
    .execute(params![id, user_id, decision.status, decision.reason, now])?;
    if decision.notify {
        let mut content = format!(
            "The tool call {tool} (tool request {id}) was {}.",
            decision.status
        );
        if let Some(reason) = decision.reason.as_deref().filter(|r| !r.is_empty()) {
            content.push_str(" Reason: ");
            content.push_str(reason);
        }
        let row = NewNotificationRow {
            session_key: format!("user:{user_id}:{}", role.as_deref().unwrap_or("agent")),
            content,
            task_id: Some(task_id),
            metadata: Some(json!({ "tool_request_id": id })),
        };
        insert_notification(&tx, user_id, &row, now)?;
    }
    let v = tx
        .prepare_cached("SELECT * FROM tool_requests WHERE id = ?1")?
        .query_row([id], tool_request_json)?;
    tx.commit()?;
    Ok(v)
}

/// Marks an approved or rejected request consumed, once: 409
/// `tool_request_pending` while pending, 409 `tool_request_consumed` when
/// consumed before, unless `key` is the key of that first consume (a retry
/// of the same call after a lost answer gets the record again). The check
/// and the update run on the single writer connection, so two concurrent
/// consumers can never both succeed.
pub(crate) fn consume_tool_request(
    conn: &mut Connection,
    user_id: &str,
    id: &str,
    key: Option<&str>,
    now: i64,
) -> Result<Value, ApiError> {
    let tx = conn.transaction()?;
    let row: Option<(String, Option<i64>, Option<String>)> = tx
        .prepare_cached(
            "SELECT status, consumed_at, consume_key FROM tool_requests
             WHERE id = ?1 AND user_id = ?2",
        )?
        .query_row(params![id, user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((status, consumed_at, consume_key)) = row else {
        return Err(ApiError::not_found("tool request not found"));
    };
    if status == "pending" {
        return Err(ApiError::new(
            409,
            "tool request is still pending",
            "tool_request_pending",
        ));
    }
    match consumed_at {
        Some(_) if key.is_some() && consume_key.as_deref() == key => {}
        Some(_) => {
            return Err(ApiError::new(
                409,
                "tool request was already consumed",
                "tool_request_consumed",
            ));
        }
        None => {
            tx.prepare_cached(
                "UPDATE tool_requests SET consumed_at = ?3, consume_key = ?4
                 WHERE id = ?1 AND user_id = ?2 AND consumed_at IS NULL",
            )?
            .execute(params![id, user_id, now, key])?;
        }
    }
    let v = tx
        .prepare_cached("SELECT * FROM tool_requests WHERE id = ?1")?
        .query_row([id], tool_request_json)?;
    tx.commit()?;
    Ok(v)
}

fn count(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<i64, ApiError> {
    Ok(conn.prepare_cached(sql)?.query_row(args, |r| r.get(0))?)
}

/// The heartbeat reply: a summary of the tenant's data.
pub(crate) fn heartbeat(conn: &Connection, user_id: &str, now: i64) -> Result<Value, ApiError> {
    let mut by_status = serde_json::Map::new();
    let mut total = 0i64;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM tasks WHERE user_id = ?1 GROUP BY status ORDER BY status",
        )?;
        let mut rows = stmt.query([user_id])?;
        while let Some(r) = rows.next()? {
            let n: i64 = r.get(1)?;
            total += n;
            by_status.insert(r.get(0)?, json!(n));
        }
    }
    Ok(json!({
        "status": "ok",
        "user_id": user_id,
        "at": rfc3339(now),
        "tasks": { "total": total, "by_status": by_status },
        "messages": { "total": count(conn, "SELECT COUNT(*) FROM messages WHERE user_id = ?1", &[&user_id])? },
        "documents": { "total": count(conn, "SELECT COUNT(*) FROM documents WHERE user_id = ?1", &[&user_id])? },
        "notifications": { "pending": count(conn, "SELECT COUNT(*) FROM notifications WHERE user_id = ?1 AND delivered_at IS NULL", &[&user_id])? },
    }))
}

/// The standup reply: activity of the last 24 hours, per task.
pub(crate) fn standup(
    conn: &Connection,
    user_id: &str,
    timezone: &str,
    date: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let since = now - 24 * 60 * 60 * 1000;
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.title, t.status,
            (SELECT COUNT(*) FROM messages m WHERE m.user_id = t.user_id AND m.task_id = t.id AND m.created_at >= ?2),
            (SELECT COUNT(*) FROM documents d WHERE d.user_id = t.user_id AND d.task_id = t.id AND d.created_at >= ?2),
            t.created_at >= ?2
         FROM tasks t WHERE t.user_id = ?1 ORDER BY t.seq",
    )?;
    let mut rows = stmt.query(params![user_id, since])?;
    let mut tasks = Vec::new();
    let (mut messages, mut documents, mut created) = (0i64, 0i64, 0i64);
    while let Some(r) = rows.next()? {
        let (m, d, new): (i64, i64, bool) = (r.get(3)?, r.get(4)?, r.get(5)?);
        if m == 0 && d == 0 && !new {
            continue;
        }
        messages += m;
        documents += d;
        created += i64::from(new);
        tasks.push(json!({
            "id": r.get::<_, String>(0)?,
            "title": r.get::<_, String>(1)?,
            "status": r.get::<_, String>(2)?,
            "created": new,
            "messages": m,
            "documents": d,
        }));
    }
    Ok(json!({
        "status": "ok",
        "user_id": user_id,
        "timezone": timezone,
        "date": date,
        "since": rfc3339(since),
        "tasks": tasks,
        "totals": { "tasks_created": created, "messages": messages, "documents": documents },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        assert_eq!(decode_cursor(&encode_cursor(0x2a)).ok(), Some(0x2a));
        for bad in ["", "c", "x12", "c-1", "czz"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    fn open_file(dir: &std::path::Path) -> Store {
        Store::open(&DbLocation::File(dir.join("t.db")), Duration::from_secs(60)).expect("opens")
    }

    /// Reads use their own connections: an open write transaction (the
    /// writer's mutex held, a row inserted but not committed) neither blocks
    /// them nor shows them the uncommitted row.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the test holds the writer on purpose while a read runs"
    )]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_file(dir.path());
        let writer = Arc::clone(&store.writer);
        let guard = writer.lock().expect("lock");
        guard
            .execute_batch(
                "BEGIN IMMEDIATE; INSERT INTO tasks (id, user_id, title, status, created_at)
                 VALUES ('t1', 'u1', 'pending', 'open', 0);",
            )
            .expect("insert");
        let count = tokio::time::timeout(
            Duration::from_secs(30),
            store.read(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))?)
            }),
        )
        .await
        .expect("a read must not wait for the writer")
        .expect("read");
        assert_eq!(count, 0);
        guard.execute_batch("COMMIT").expect("commit");
        drop(guard);
        let count = store
            .read(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))?)
            })
            .await
            .expect("read");
        assert_eq!(count, 1);
    }

    #[test]
    fn readers_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_file(dir.path());
        let reader = store.readers[0].lock().expect("lock");
        assert!(reader.execute_batch("DELETE FROM tasks").is_err());
    }

    #[test]
    fn sweep_deletes_a_bounded_batch_of_expired_records() {
        let store = Store::open(&DbLocation::Memory, Duration::from_secs(60)).expect("opens");
        let conn = store.writer.lock().expect("lock");
        for i in 0..5 {
            conn.execute(
                "INSERT INTO idempotency (user_id, endpoint, key, fingerprint, response, created_at)
                 VALUES ('u', 'tasks', ?1, 'fp', '{}', ?2)",
                params![format!("k{i}"), i * 10],
            )
            .expect("insert");
        }
        // Records created before 25: k0, k1, k2; two per sweep.
        assert_eq!(sweep_idempotency(&conn, 25, 2).expect("sweep"), 2);
        assert_eq!(sweep_idempotency(&conn, 25, 2).expect("sweep"), 1);
        assert_eq!(sweep_idempotency(&conn, 25, 2).expect("sweep"), 0);
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM idempotency", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 2);
    }

    #[test]
    fn an_older_database_gains_the_new_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE notifications (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                 user_id TEXT NOT NULL, session_key TEXT NOT NULL, content TEXT NOT NULL,
                 created_at INTEGER NOT NULL, delivered_at INTEGER);",
            )
            .expect("old schema");
        }
        let store =
            Store::open(&DbLocation::File(path), Duration::from_secs(60)).expect("migrates");
        let conn = store.writer.lock().expect("lock");
        conn.execute(
            "INSERT INTO notifications (id, user_id, session_key, content, task_id, metadata, created_at)
             VALUES ('n', 'u', 's', 'c', 't', '{}', 0)",
            [],
        )
        .expect("new columns exist");
    }

    #[test]
    fn idempotency_is_per_user_and_endpoint() {
        let store = Store::open(&DbLocation::Memory, Duration::from_secs(60)).expect("opens");
        let mut conn = store.writer.lock().expect("lock");
        let row = NewTaskRow {
            title: "t".into(),
            description: None,
            status: "open".into(),
            metadata: None,
        };
        let mut create = |user: &str, endpoint: &str, fp: &str| {
            let scope = IdemScope {
                user_id: user,
                endpoint,
                key: Some("k"),
                fingerprint: fp,
                now: 1,
                expired_before: 0,
            };
            idempotent(&mut conn, &scope, |tx| insert_task(tx, user, &row, 1))
        };
        let a = create("u1", "tasks", "fp").expect("created");
        assert_eq!(create("u1", "tasks", "fp").expect("repeat")["id"], a["id"]);
        assert_eq!(
            create("u1", "tasks", "other").expect_err("conflict").status,
            409
        );
        assert_ne!(
            create("u2", "tasks", "fp").expect("other user")["id"],
            a["id"]
        );
        assert_ne!(
            create("u1", "other", "fp").expect("other endpoint")["id"],
            a["id"]
        );
    }
}
