//! SQLite persistence: schema, tenant-scoped queries and the idempotency
//! table. Every function here is synchronous and runs on a blocking thread
//! via [`Store::run`]; nothing here knows about HTTP beyond [`ApiError`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
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
CREATE TABLE IF NOT EXISTS idempotency (
    user_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, endpoint, key)
);
";

/// The database behind a mutex; all access goes through [`Store::run`].
pub(crate) struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub(crate) fn open(location: &DbLocation) -> crate::Result<Self> {
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread, so the async
    /// runtime never waits on SQLite.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ApiError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| ApiError::internal(format!("database task failed: {e}")))?
    }
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

/// Runs `create` at most once per `(user, endpoint, key)`: a repeat with the
/// same fingerprint answers the stored response, a different fingerprint is
/// a 409. Lookup, create and record happen in one transaction under the
/// connection mutex, so concurrent repeats cannot both create.
pub(crate) fn idempotent(
    conn: &mut Connection,
    user_id: &str,
    endpoint: &str,
    key: Option<&str>,
    fingerprint: &str,
    now: i64,
    create: impl FnOnce(&Transaction<'_>) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let tx = conn.transaction()?;
    if let Some(key) = key {
        let stored: Option<(String, String)> = tx
            .query_row(
                "SELECT fingerprint, response FROM idempotency
                 WHERE user_id = ?1 AND endpoint = ?2 AND key = ?3",
                params![user_id, endpoint, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
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
        tx.execute(
            "INSERT INTO idempotency (user_id, endpoint, key, fingerprint, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user_id, endpoint, key, fingerprint, value.to_string(), now],
        )?;
    }
    tx.commit()?;
    Ok(value)
}

/// A task row as JSON.
fn task_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
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
    tx.execute(
        "INSERT INTO tasks (id, user_id, title, description, status, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            user_id,
            t.title,
            t.description,
            t.status,
            t.metadata.as_ref().map(Value::to_string),
            now
        ],
    )?;
    Ok(tx.query_row("SELECT * FROM tasks WHERE id = ?1", [&id], task_json)?)
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

pub(crate) fn list_tasks(
    conn: &Connection,
    user_id: &str,
    after: i64,
    limit: u32,
) -> Result<Value, ApiError> {
    page(
        conn,
        "SELECT * FROM tasks WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        &[&user_id, &after, &(i64::from(limit) + 1)],
        limit,
        task_json,
    )
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
    tx.execute(
        "INSERT INTO messages (id, user_id, task_id, content, actor_type, actor_id, agent_role, attachments, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            user_id,
            m.task_id,
            m.content,
            m.actor_type,
            m.actor_id,
            m.agent_role,
            m.attachments.as_ref().map(Value::to_string),
            now
        ],
    )?;
    Ok(tx.query_row("SELECT * FROM messages WHERE id = ?1", [&id], message_json)?)
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

fn document_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
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
    tx.execute(
        "INSERT INTO documents (id, user_id, task_id, title, content, doc_type, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, user_id, d.task_id, d.title, d.content, d.doc_type, now],
    )?;
    Ok(tx.query_row(
        "SELECT * FROM documents WHERE id = ?1",
        [&id],
        document_json,
    )?)
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

/// Queues a notification for dispatch.
pub(crate) fn insert_notification(
    tx: &Transaction<'_>,
    user_id: &str,
    session_key: &str,
    content: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let id = new_id("ntf");
    tx.execute(
        "INSERT INTO notifications (id, user_id, session_key, content, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, user_id, session_key, content, now],
    )?;
    Ok(json!({
        "notification_id": id,
        "user_id": user_id,
        "session_key": session_key,
        "content": content,
        "created_at": rfc3339(now),
    }))
}

/// Pending deliveries, oldest first: at most `limit_users` distinct users and
/// `limit_notifications` per user.
pub(crate) fn undelivered(
    conn: &Connection,
    limit_users: usize,
    limit_notifications: usize,
) -> Result<Value, ApiError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_id, session_key, content FROM notifications
         WHERE delivered_at IS NULL ORDER BY seq LIMIT 10000",
    )?;
    let mut rows = stmt.query([])?;
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    let mut deliveries = Vec::new();
    while let Some(r) = rows.next()? {
        let user: String = r.get(1)?;
        let known = per_user.contains_key(&user);
        if !known && per_user.len() >= limit_users {
            continue;
        }
        let count = per_user.entry(user.clone()).or_insert(0);
        if *count >= limit_notifications {
            continue;
        }
        *count += 1;
        deliveries.push(json!({
            "notification_id": r.get::<_, String>(0)?,
            "user_id": user,
            "session_key": r.get::<_, String>(2)?,
            "content": r.get::<_, String>(3)?,
        }));
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

    #[test]
    fn idempotency_is_per_user_and_endpoint() {
        let store = Store::open(&DbLocation::Memory).expect("opens");
        let mut conn = store.conn.lock().expect("lock");
        let row = NewTaskRow {
            title: "t".into(),
            description: None,
            status: "open".into(),
            metadata: None,
        };
        let mut create = |user: &str, endpoint: &str, fp: &str| {
            idempotent(&mut conn, user, endpoint, Some("k"), fp, 1, |tx| {
                insert_task(tx, user, &row, 1)
            })
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
