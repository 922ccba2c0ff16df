//! [`RedisStore`]: governance state shared by every replica, in any
//! Redis-protocol server (Redis 7, Valkey, managed services).
//!
//! Every check-and-update is one Lua script (`EVALSHA`, loaded on first
//! use), so concurrent requests on any number of replicas never race; the
//! rate limits read the server's clock (`TIME`), so replicas' clocks need
//! not agree. Every key expires: reservations with their lease, budget
//! counters a day after their period, rate state after a minute idle, the
//! usage ledger 400 days after its last write.
//!
//! Key layout (prefix `wombat:`; the user id is always the last part, so no
//! user id can name another key): `l:<user>` (zset of leases by expiry),
//! `lv:<user>` (hash lease → reserved micro-dollars), `bd:<day>:<user>` and
//! `bm:<month>:<user>` (hash `spent`), `rpm:<user>` / `tpm:<user>` (leaky
//! buckets: level and time), `u:all` (totals and `<field>:<model>`), `u:models`,
//! `u:users` (sets, bounded), `u:user:<user>`, `u:day:<day>`,
//! `u:uday:<day>:<user>`. Scripts build the usage keys from their
//! arguments, so this store targets a single Redis (or a primary with
//! replicas), not Redis Cluster.

use std::collections::BTreeMap;

use std::io::Write as _;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, RedisWrite, Script, ToRedisArgs, Value};
use tokio::sync::OnceCell;

use crate::limits::{PeriodKind, RateKind};
use crate::store::{
    Admission, AdmitRequest, MAX_MODELS, MAX_USERS, Refusal, SettleRequest, Settlement, Store,
    StoreError, UsageRecord, UsageSnapshot, UsageTotals,
};

const PREFIX: &str = "wombat:";

/// Seconds the usage ledger keeps a key after its last write.
const USAGE_TTL_SECS: u64 = 400 * 86_400;

const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, l in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], l)
  redis.call('HDEL', KEYS[2], l)
end
local conc = tonumber(ARGV[9])
if conc > 0 and redis.call('ZCARD', KEYS[1]) >= conc then
  return {1, conc, 0, 0, 0}
end
-- The grant: at most ARGV[10] requests, and at most 1/16 of what is left
-- under each limit (in requests of this size), at least this one.
local n = tonumber(ARGV[10])
local reserve, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
local function bound(left, per)
  if per > 0 then n = math.min(n, math.max(1, math.floor(left / (per * 16)))) end
end
-- A request that reserves nothing against a budget (an unpriced model) is
-- granted alone: its real cost is not bounded by its estimate.
local function budget(left) if reserve > 0 then bound(left, reserve) else n = 1 end end
if conc > 0 then n = 1 end
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local day = tonumber(redis.call('HGET', KEYS[3], 'spent') or '0')
local month = tonumber(redis.call('HGET', KEYS[4], 'spent') or '0')
local day_limit = tonumber(ARGV[5])
if day_limit >= 0 and day + reserved >= day_limit then return {2, day_limit, day, reserved, 0} end
if day_limit >= 0 then budget(day_limit - day - reserved) end
local month_limit = tonumber(ARGV[6])
if month_limit >= 0 and month + reserved >= month_limit then return {3, month_limit, month, reserved, 0} end
if month_limit >= 0 then budget(month_limit - month - reserved) end
local window = 60000
-- Leaky buckets: a level (requests or tokens) that drains at the limit per
-- minute. The level is kept, not the rate, so a tenant whose plan changes
-- is judged by what it really used.
local function level(key, limit)
  local h = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(h[1] or '0'), tonumber(h[2] or tostring(now))
  return math.max(0, l - math.max(0, now - at) * limit / window)
end
local function keep(key, l, limit)
  if l <= 0 then redis.call('DEL', key) return end
  redis.call('HSET', key, 'l', string.format('%.6f', l), 't', now)
  redis.call('PEXPIRE', key, math.ceil(l * window / limit) + 1)
end
local rpm = tonumber(ARGV[7])
local rpm_level = 0
if rpm > 0 then
  rpm_level = level(KEYS[5], rpm)
  if rpm_level + 1 > rpm then return {4, math.ceil((rpm_level + 1 - rpm) * window / rpm), 0, 0, 0} end
  bound(rpm - rpm_level, 1)
end
local tpm = tonumber(ARGV[8])
local tpm_level = 0
if tpm > 0 then
  tpm_level = level(KEYS[6], tpm)
  if tpm_level >= tpm then return {5, math.ceil((tpm_level - tpm + 1) * window / tpm), 0, 0, 0} end
  bound(tpm - tpm_level, tokens)
end
if rpm > 0 then keep(KEYS[5], rpm_level + n, rpm) end
if tpm > 0 then keep(KEYS[6], tpm_level + n * tokens, tpm) end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', n * reserve))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {0, day, month, reserved + n * reserve, n}
";

const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
elseif redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  -- The settled request's reservation (and any given-back requests') leave
  -- the lease; the lease stays for the requests still in flight.
  redis.call('HINCRBY', KEYS[2], ARGV[1], string.format('%d', -tonumber(ARGV[7])))
end
-- Adds `delta` to a leaky bucket (drained to now at `limit` a minute).
local function add(key, limit, delta)
  local h = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(h[1] or '0'), tonumber(h[2] or tostring(now))
  l = math.max(0, l - math.max(0, now - at) * limit / 60000) + delta
  if l > 0 then
    redis.call('HSET', key, 'l', string.format('%.6f', l), 't', now)
    redis.call('PEXPIRE', key, math.ceil(l * 60000 / limit) + 1)
  else
    redis.call('DEL', key)
  end
end
-- A grant's unused requests go back to the requests-per-minute bucket.
local rpm, unused = tonumber(ARGV[10]), tonumber(ARGV[9])
if rpm > 0 and unused > 0 then add(KEYS[6], rpm, -unused) end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('HINCRBY', KEYS[3], 'spent', cost)
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'spent', cost)
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
local tpm = tonumber(ARGV[4])
local delta = tonumber(ARGV[3])
if tpm > 0 and delta ~= 0 then add(KEYS[5], tpm, delta) end
return 1
";

const RECORD: &str = r"
local p = ARGV[1]
local user, model = ARGV[2], ARGV[3]
-- ARGV[13] calls of which ARGV[4] estimated (a batch's calls of one user,
-- model and day are recorded at once).
local ttl, estimated, calls = ARGV[12], tonumber(ARGV[4]), ARGV[13]
local function bound(set, name, max)
  if redis.call('SISMEMBER', set, name) == 1 then return name end
  if redis.call('SCARD', set) >= max then
    redis.call('SADD', set, '_other')
    return '_other'
  end
  redis.call('SADD', set, name)
  return name
end
model = bound(p .. 'u:models', model, tonumber(ARGV[10]))
user = bound(p .. 'u:users', user, tonumber(ARGV[11]))
local function add(key, suffix)
  redis.call('HINCRBY', key, 'r' .. suffix, calls)
  if estimated > 0 then redis.call('HINCRBY', key, 'e' .. suffix, estimated) end
  redis.call('HINCRBY', key, 'i' .. suffix, ARGV[5])
  redis.call('HINCRBY', key, 'o' .. suffix, ARGV[6])
  redis.call('HINCRBY', key, 't' .. suffix, ARGV[7])
  redis.call('HINCRBY', key, 'c' .. suffix, ARGV[8])
end
local all, mine = p .. 'u:all', p .. 'u:user:' .. user
local day, uday = p .. 'u:day:' .. ARGV[9], p .. 'u:uday:' .. ARGV[9] .. ':' .. user
add(all, '')
add(all, ':' .. model)
add(mine, '')
add(mine, ':' .. model)
add(day, '')
add(uday, '')
-- Each key's expiry once (not once per add): the script's cost is the
-- server's, on every call.
for _, key in ipairs({all, mine, day, uday, p .. 'u:models', p .. 'u:users'}) do
  redis.call('EXPIRE', key, ttl)
end
return 1
";

/// Governance state in Redis.
pub struct RedisStore {
    client: Client,
    conn: OnceCell<ConnectionManager>,
    admit: Script,
    settle: Script,
    record: Script,
    /// SETTLE and RECORD in one script: one round trip after a call.
    settle_record: Script,
}

/// Arguments of SETTLE.
const SETTLE_ARGS: usize = 10;
/// Arguments of RECORD.
const RECORD_ARGS: usize = 13;

/// The body of the combined script: SETTLE on its keys and first
/// [`SETTLE_ARGS`] arguments (skipped when no keys are given), RECORD on
/// the rest (skipped when they are empty: a grant's release alone).
fn settle_record_source() -> String {
    format!(
        "local function settle(KEYS, ARGV)\n{SETTLE}\nend\n\
         local function record(ARGV)\n{RECORD}\nend\n\
         if #KEYS > 0 then settle(KEYS, {{unpack(ARGV, 1, {SETTLE_ARGS})}}) end\n\
         if ARGV[{first}] ~= '' then record({{unpack(ARGV, {first})}}) end\nreturn 1\n",
        first = SETTLE_ARGS + 1
    )
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS when built with it). Connects lazily, on first
    /// use, so a daemon starts (and fails open) while Redis is down.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: Client::open(url)?,
            conn: OnceCell::new(),
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
            record: Script::new(RECORD),
            settle_record: Script::new(&settle_record_source()),
        })
    }

    /// The shared connection; the manager reconnects by itself after a
    /// failure (the failing call errors, later ones use the new connection).
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                // One attempt per call: the governor bounds each call with
                // its own timeout and decides what a failure means. No
                // response timeout of the client's own: that would be a
                // second timer per call for the same bound.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_response_timeout(None);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(conn.clone())
    }
}

/// `EVALSHA <script> <keys>`, arguments to follow. The command is built
/// directly (not through `ScriptInvocation`, which keeps every argument in
/// its own vector and copies them into the command again).
fn evalsha(script: &Script, keys: usize, args: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + keys + args, 256);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
    cmd
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Runs an `EVALSHA` built by [`evalsha`], loading the script first when
/// the server does not know it (a new or restarted server).
async fn eval<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    script: &Script,
    cmd: &Cmd,
) -> Result<T, StoreError> {
    match cmd.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            script.load_async(conn).await?;
            Ok(cmd.query_async(conn).await?)
        }
        r => Ok(r?),
    }
}

/// A key `wombat:<part><part>...` written straight into the command, with
/// no intermediate `String`.
struct Key<'a, const N: usize>([&'a str; N]);

impl<const N: usize> ToRedisArgs for Key<'_, N> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        let mut w = out.writer_for_next_arg();
        for part in std::iter::once(PREFIX).chain(self.0) {
            // Writing to the command's own buffer cannot fail.
            let _ = w.write_all(part.as_bytes());
        }
    }
}

fn limit_arg(v: Option<u64>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn totals(fields: &BTreeMap<String, i64>, suffix: &str) -> UsageTotals {
    let get = |f: &str| to_u64(fields.get(&format!("{f}{suffix}")).copied().unwrap_or(0));
    UsageTotals {
        requests: get("r"),
        estimated: get("e"),
        input: get("i"),
        output: get("o"),
        total: get("t"),
        cost_micros: get("c"),
    }
}

/// Totals and the per-model breakdown of a hash with `<field>[:<model>]`.
fn split(fields: &BTreeMap<String, i64>) -> (UsageTotals, BTreeMap<String, UsageTotals>) {
    let models: std::collections::BTreeSet<&str> = fields
        .keys()
        .filter_map(|k| k.split_once(':').map(|(_, m)| m))
        .collect();
    let by_model = models
        .into_iter()
        .map(|m| (m.to_owned(), totals(fields, &format!(":{m}"))))
        .collect();
    (totals(fields, ""), by_model)
}

/// SETTLE's six keys.
fn settle_keys(cmd: &mut Cmd, req: &SettleRequest<'_>) {
    let u = req.user;
    cmd.arg(Key(["l:", u]))
        .arg(Key(["lv:", u]))
        .arg(Key(["bd:", &req.periods.day, ":", u]))
        .arg(Key(["bm:", &req.periods.month, ":", u]))
        .arg(Key(["tpm:", u]))
        .arg(Key(["rpm:", u]));
}

/// SETTLE's [`SETTLE_ARGS`] arguments.
fn settle_args(cmd: &mut Cmd, req: &SettleRequest<'_>) {
    cmd.arg(req.lease)
        .arg(req.cost_micros)
        .arg(req.token_delta)
        .arg(req.tpm.unwrap_or(0))
        .arg(req.day_ttl_secs)
        .arg(req.month_ttl_secs)
        .arg(req.unit_micros)
        .arg(u8::from(req.release))
        .arg(req.unused_units)
        .arg(req.rpm.unwrap_or(0));
}

/// RECORD's [`RECORD_ARGS`] arguments for one call.
fn record_args(cmd: &mut Cmd, rec: &UsageRecord<'_>) {
    record_many_args(cmd, &Merged::of(rec));
}

/// Calls of one user, model and day, added up: recorded in one script.
#[derive(Debug)]
struct Merged<'a> {
    rec: UsageRecord<'a>,
    calls: u64,
    estimated: u64,
}

impl<'a> Merged<'a> {
    fn of(rec: &UsageRecord<'a>) -> Self {
        Self {
            rec: rec.clone(),
            calls: 1,
            estimated: u64::from(rec.estimated),
        }
    }

    fn add(&mut self, rec: &UsageRecord<'_>) {
        let r = &mut self.rec;
        r.input = r.input.saturating_add(rec.input);
        r.output = r.output.saturating_add(rec.output);
        r.total = r.total.saturating_add(rec.total);
        r.cost_micros = r.cost_micros.saturating_add(rec.cost_micros);
        self.calls += 1;
        self.estimated += u64::from(rec.estimated);
    }
}

/// RECORD's [`RECORD_ARGS`] arguments for merged calls.
fn record_many_args(cmd: &mut Cmd, m: &Merged<'_>) {
    let rec = &m.rec;
    cmd.arg(PREFIX)
        .arg(rec.user)
        .arg(rec.model)
        .arg(m.estimated)
        .arg(rec.input)
        .arg(rec.output)
        .arg(rec.total)
        .arg(rec.cost_micros)
        .arg(rec.day)
        .arg(MAX_MODELS)
        .arg(MAX_USERS)
        .arg(USAGE_TTL_SECS)
        .arg(m.calls);
}

/// The settlements of one batch, added up per lease (and day): a grant's
/// requests settled within one batch take one script.
fn merge_settles<'b>(batch: &'b [Settlement<'b>]) -> Vec<SettleRequest<'b>> {
    let mut out: Vec<SettleRequest<'b>> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for s in batch.iter().filter_map(|s| s.settle.as_ref()) {
        match index.get(&(s.lease, s.periods.day.as_str())) {
            Some(&i) => {
                let m = &mut out[i];
                m.cost_micros = m.cost_micros.saturating_add(s.cost_micros);
                m.token_delta = m.token_delta.saturating_add(s.token_delta);
                m.unused_units = m.unused_units.saturating_add(s.unused_units);
                m.release |= s.release;
                m.unit_micros = m.unit_micros.saturating_add(s.unit_micros);
            }
            None => {
                index.insert((s.lease, s.periods.day.as_str()), out.len());
                // A release drops the lease: its reservation figure is moot.
                out.push(s.clone());
            }
        }
    }
    out
}

/// The records of one batch, added up per user, model and day.
fn merge_records<'b>(batch: &'b [Settlement<'b>]) -> Vec<Merged<'b>> {
    let mut out: Vec<Merged<'b>> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str, &str), usize> =
        std::collections::HashMap::new();
    for r in batch.iter().filter_map(|s| s.record.as_ref()) {
        match index.get(&(r.user, r.model, r.day)) {
            Some(&i) => out[i].add(r),
            None => {
                index.insert((r.user, r.model, r.day), out.len());
                out.push(Merged::of(r));
            }
        }
    }
    out
}

impl RedisStore {
    /// The combined settle-and-record command of one finished call (or a
    /// grant's release alone, without a record).
    fn settle_record_cmd(
        &self,
        settle: Option<&SettleRequest<'_>>,
        rec: Option<&UsageRecord<'_>>,
    ) -> Cmd {
        let mut cmd = evalsha(
            &self.settle_record,
            if settle.is_some() { 6 } else { 0 },
            SETTLE_ARGS + RECORD_ARGS,
        );
        match settle {
            Some(req) => {
                settle_keys(&mut cmd, req);
                settle_args(&mut cmd, req);
            }
            None => {
                for _ in 0..SETTLE_ARGS {
                    cmd.arg(0);
                }
            }
        }
        match rec {
            Some(rec) => record_args(&mut cmd, rec),
            None => {
                for _ in 0..RECORD_ARGS {
                    cmd.arg("");
                }
            }
        }
        cmd
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        let mut conn = self.conn().await?;
        let u = req.user;
        let l = req.limits;
        let mut cmd = evalsha(&self.admit, 6, 10);
        cmd.arg(Key(["l:", u]))
            .arg(Key(["lv:", u]))
            .arg(Key(["bd:", &req.periods.day, ":", u]))
            .arg(Key(["bm:", &req.periods.month, ":", u]))
            .arg(Key(["rpm:", u]))
            .arg(Key(["tpm:", u]))
            .arg(req.lease)
            .arg(
                u64::try_from(req.lease_ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(req.reserve_micros)
            .arg(req.tokens)
            .arg(limit_arg(l.budget_day_micros))
            .arg(limit_arg(l.budget_month_micros))
            .arg(l.rpm.unwrap_or(0))
            .arg(l.tpm.unwrap_or(0))
            .arg(l.concurrency.unwrap_or(0))
            .arg(req.units.max(1));
        // A fixed-size reply, read without allocating a vector.
        let (code, a, b, c, n): (i64, i64, i64, i64, i64) =
            eval(&mut conn, &self.admit, &cmd).await?;
        let budget = |period| {
            Admission::Refused(Refusal::Budget {
                period,
                limit_micros: to_u64(a),
                spent_micros: to_u64(b),
                reserved_micros: to_u64(c),
            })
        };
        let rate = |kind| {
            Admission::Refused(Refusal::Rate {
                kind,
                retry_after: std::time::Duration::from_millis(to_u64(a).max(1)),
            })
        };
        Ok(match code {
            0 => Admission::Admitted {
                day_spent_micros: to_u64(a),
                month_spent_micros: to_u64(b),
                reserved_micros: to_u64(c),
                units: u32::try_from(n).unwrap_or(1).clamp(1, req.units.max(1)),
            },
            1 => Admission::Refused(Refusal::Concurrency {
                limit: u32::try_from(a).unwrap_or(u32::MAX),
            }),
            2 => budget(PeriodKind::Day),
            3 => budget(PeriodKind::Month),
            4 => rate(RateKind::Requests),
            5 => rate(RateKind::Tokens),
            other => return Err(StoreError::Protocol(format!("admit code {other}"))),
        })
    }

    async fn settle(&self, req: &SettleRequest<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut cmd = evalsha(&self.settle, 6, SETTLE_ARGS);
        settle_keys(&mut cmd, req);
        settle_args(&mut cmd, req);
        let _: i64 = eval(&mut conn, &self.settle, &cmd).await?;
        Ok(())
    }

    async fn record(&self, rec: &UsageRecord<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut cmd = evalsha(&self.record, 0, RECORD_ARGS);
        record_args(&mut cmd, rec);
        let _: i64 = eval(&mut conn, &self.record, &cmd).await?;
        Ok(())
    }

    async fn settle_and_record(
        &self,
        settle: Option<&SettleRequest<'_>>,
        rec: &UsageRecord<'_>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let cmd = self.settle_record_cmd(settle, Some(rec));
        let _: i64 = eval(&mut conn, &self.settle_record, &cmd).await?;
        Ok(())
    }

    async fn settle_many(&self, batch: &[Settlement<'_>]) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        // One pipeline: one write and one read for the whole batch. The
        // batch is added up first (per lease, and per user, model and day
        // for the ledger): under steady traffic a batch holds many calls of
        // few users, and the ledger script is the server's largest cost.
        // Each script is atomic on its own; settlements go first, so a
        // reservation is never released after the ledger of a later call.
        let settles = merge_settles(batch);
        let records = merge_records(batch);
        let count = settles.len() + records.len();
        if count == 0 {
            return Ok(());
        }
        // The i-th command of the pipeline, and its script.
        let command = |i: usize| -> (&Script, Cmd) {
            match settles.get(i) {
                Some(req) => {
                    let mut cmd = evalsha(&self.settle, 6, SETTLE_ARGS);
                    settle_keys(&mut cmd, req);
                    settle_args(&mut cmd, req);
                    (&self.settle, cmd)
                }
                None => {
                    let mut cmd = evalsha(&self.record, 0, RECORD_ARGS);
                    record_many_args(&mut cmd, &records[i - settles.len()]);
                    (&self.record, cmd)
                }
            }
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for i in 0..count {
            pipe.add_command(command(i).1);
        }
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        if replies.len() != count {
            return Err(StoreError::Protocol("short pipeline reply".into()));
        }
        // A server that lost its scripts (restarted) refuses every EVALSHA
        // of the batch with NOSCRIPT, running none: load, then send those
        // again. Any other error is reported after the rest went through.
        let mut first_error = None;
        let mut again = redis::pipe();
        again.ignore_errors();
        let mut load: Vec<&Script> = Vec::new();
        for (i, reply) in replies.into_iter().enumerate() {
            if let Value::ServerError(e) = reply {
                if e.kind() == Some(redis::ServerErrorKind::NoScript) {
                    let (script, cmd) = command(i);
                    if !load.iter().any(|l| std::ptr::eq(*l, script)) {
                        load.push(script);
                    }
                    again.add_command(cmd);
                } else if first_error.is_none() {
                    first_error = Some(StoreError::Redis(e.into()));
                }
            }
        }
        if !again.is_empty() {
            for script in load {
                script.load_async(&mut conn).await?;
            }
            let replies: Vec<Value> = again.query_async(&mut conn).await?;
            for reply in replies {
                if let Value::ServerError(e) = reply {
                    if first_error.is_none() {
                        first_error = Some(StoreError::Redis(e.into()));
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn usage(
        &self,
        user: Option<&str>,
        days: &[String],
    ) -> Result<UsageSnapshot, StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        let main = match user {
            Some(u) => format!("{PREFIX}u:user:{u}"),
            None => format!("{PREFIX}u:all"),
        };
        pipe.hgetall(&main);
        for d in days {
            match user {
                Some(u) => pipe.hgetall(format!("{PREFIX}u:uday:{d}:{u}")),
                None => pipe.hgetall(format!("{PREFIX}u:day:{d}")),
            };
        }
        let mut hashes: Vec<BTreeMap<String, i64>> = pipe.query_async(&mut conn).await?;
        if hashes.len() != days.len() + 1 {
            return Err(StoreError::Protocol("short pipeline reply".into()));
        }
        let day_hashes = hashes.split_off(1);
        let (totals_all, by_model) = split(&hashes[0]);
        let by_day = days
            .iter()
            .zip(day_hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(d, h)| (d.clone(), totals(&h, "")))
            .collect();
        let by_user = if user.is_none() {
            let users: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{PREFIX}u:users"))
                .query_async(&mut conn)
                .await?;
            let mut out = BTreeMap::new();
            // Chunked, so that a large ledger never blocks the server long.
            for chunk in users.chunks(1000) {
                let mut pipe = redis::pipe();
                for u in chunk {
                    pipe.hgetall(format!("{PREFIX}u:user:{u}"));
                }
                let hashes: Vec<BTreeMap<String, i64>> = pipe.query_async(&mut conn).await?;
                for (u, h) in chunk.iter().zip(hashes) {
                    if !h.is_empty() {
                        out.insert(u.clone(), totals(&h, ""));
                    }
                }
            }
            Some(out)
        } else {
            None
        };
        Ok(UsageSnapshot {
            totals: totals_all,
            by_model,
            by_user,
            by_day,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admit_script_takes_the_documented_share_of_the_headroom() {
        assert!(super::ADMIT.contains(&format!("(per * {})", crate::GRANT_SHARE)));
    }
}
