//! The store suite, run against the in-memory store and a real Redis, and
//! the governor's behaviour when Redis goes away.

mod governor;
mod redis_server;
mod suite;
