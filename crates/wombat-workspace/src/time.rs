//! Time zones and the `## Current Time` block.
//!
//! Zone names are resolved through jiff's IANA database. The caller injects the
//! clock (`now`), so nothing here reads the system time.

use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::{Error, Result};

/// A resolved zone together with the name shown in the prompt. Cheap to
/// clone (one shared allocation).
#[derive(Debug, Clone)]
pub(crate) struct Zone(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    tz: TimeZone,
    /// The date and time block of the last local minute asked for: every
    /// prompt of that minute shows the same block, so it is formatted once
    /// per minute, not per request.
    minute: Mutex<Option<Minute>>,
}

/// What [`Zone::clock`] gives for every instant of one local minute.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// The civil date.
    pub(crate) date: Date,
    /// The `## Current Time` block.
    pub(crate) block: Arc<str>,
}

#[derive(Debug)]
struct Minute {
    /// Unix seconds: the minute's first second and the next minute's.
    from: i64,
    until: i64,
    clock: Clock,
}

impl Zone {
    fn new(name: String, tz: TimeZone) -> Self {
        Self(Arc::new(Inner {
            name,
            tz,
            minute: Mutex::new(None),
        }))
    }

    pub(crate) fn utc() -> Self {
        Self::new("UTC".to_owned(), TimeZone::UTC)
    }

    /// Looks `name` up in the IANA database.
    pub(crate) fn lookup(name: &str) -> Result<Self> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(Error::UnknownTimeZone {
                name: name.to_owned(),
            });
        }
        let tz = TimeZone::get(trimmed).map_err(|_| Error::UnknownTimeZone {
            name: name.to_owned(),
        })?;
        Ok(Self::new(trimmed.to_owned(), tz))
    }

    /// The system zone when it has an IANA name, else UTC (an unnamed zone
    /// could not be shown truthfully in the prompt).
    pub(crate) fn system_or_utc() -> Self {
        let tz = TimeZone::system();
        match tz.iana_name() {
            Some(name) => Self::new(name.to_owned(), tz),
            None => Self::utc(),
        }
    }

    /// The date and the time block of `now`, formatted once per local minute
    /// (the block shows hours and minutes; the minute's bounds are taken from
    /// the local time, so a zone whose offset is not whole minutes is right
    /// too, and a minute an offset change cuts through is not cached).
    pub(crate) fn clock(&self, now: Timestamp) -> Clock {
        // Whole seconds, rounded down (jiff truncates towards zero).
        let second = now.as_second() - i64::from(now.subsec_nanosecond() < 0);
        let mut cached = self.0.minute.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = cached
            .as_ref()
            .filter(|m| (m.from..m.until).contains(&second))
        {
            return m.clock.clone();
        }
        let zoned = now.to_zoned_datetime(self.0.tz.clone());
        let from = second - i64::from(zoned.second());
        let clock = Clock {
            date: zoned.date(),
            block: self.time_block(&zoned).into(),
        };
        let until = from + 60;
        // A change of offset inside the minute (one not of whole minutes,
        // like Monrovia's −0:44:30 → GMT in 1972) splits it between two
        // local minutes: such a minute is formatted per call, not cached.
        let steady = [from, until - 1].into_iter().all(|s| {
            Timestamp::from_second(s).is_ok_and(|t| self.0.tz.to_offset(t) == zoned.offset())
        });
        if steady {
            *cached = Some(Minute {
                from,
                until,
                clock: clock.clone(),
            });
        }
        clock
    }

    /// `## Current Time` block, for example
    /// `## Current Time\n\n- **Date:** Sunday, February 1, 2026\n- **Time:** 7:15 PM\n- **Timezone:** America/Los_Angeles`.
    #[cfg(test)]
    pub(crate) fn time_context(&self, now: Timestamp) -> String {
        self.time_block(&now.to_zoned_datetime(self.0.tz.clone()))
    }

    fn time_block(&self, zoned: &jiff::ZonedDateTime) -> String {
        format!(
            "## Current Time\n\n- **Date:** {}\n- **Time:** {}\n- **Timezone:** {}",
            zoned.strftime("%A, %B %-d, %Y"),
            zoned.strftime("%-I:%M %p"),
            self.0.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn formats_the_0_1_0_block() {
        let zone = Zone::lookup("America/Los_Angeles").expect("zone");
        assert_eq!(
            zone.time_context(ts("2026-02-02T03:15:00Z")),
            "## Current Time\n\n- **Date:** Sunday, February 1, 2026\n- **Time:** 7:15 PM\n- **Timezone:** America/Los_Angeles"
        );
        let utc = Zone::utc();
        assert_eq!(
            utc.time_context(ts("2026-03-09T00:05:00Z")),
            "## Current Time\n\n- **Date:** Monday, March 9, 2026\n- **Time:** 12:05 AM\n- **Timezone:** UTC"
        );
    }

    #[test]
    fn dates_follow_the_zone() {
        let now = ts("2026-02-02T03:00:00Z");
        let la = Zone::lookup("America/Los_Angeles").expect("zone");
        let tokyo = Zone::lookup("Asia/Tokyo").expect("zone");
        assert_eq!(la.clock(now).date.to_string(), "2026-02-01");
        assert_eq!(tokyo.clock(now).date.to_string(), "2026-02-02");
    }

    /// The per-minute cache gives what formatting each instant would, across
    /// minute and day boundaries, backwards in time, and in a zone whose
    /// offset was not whole minutes (Monrovia, −0:44:30 until 1972).
    #[test]
    fn the_cached_clock_matches_formatting_every_instant() {
        for (name, start) in [
            ("America/Los_Angeles", "2026-02-02T07:58:31Z"),
            ("Africa/Monrovia", "1971-06-30T23:58:01Z"),
            // −0:44:30 → GMT at 00:44:30Z: the transition splits a local
            // minute, crossed forwards and then backwards.
            ("Africa/Monrovia", "1972-01-07T00:43:00Z"),
            ("UTC", "2026-12-31T23:58:59.5Z"),
        ] {
            let zone = Zone::lookup(name).expect("zone");
            let start = ts(start);
            let steps = (0..60).chain((0..60).rev());
            for step in steps {
                let now = start + jiff::SignedDuration::from_millis(step * 3_500);
                let zoned = now.to_zoned_datetime(zone.0.tz.clone());
                let clock = zone.clock(now);
                assert_eq!(&*clock.block, zone.time_context(now), "{name} {now}");
                assert_eq!(clock.date, zoned.date(), "{name} {now}");
            }
        }
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        for bad in ["Mars/Olympus_Mons", "", "   ", "../../etc/passwd"] {
            assert!(
                matches!(Zone::lookup(bad), Err(Error::UnknownTimeZone { .. })),
                "{bad}"
            );
        }
    }
}
