//! Time zones and the `## Current Time` block.
//!
//! Zone names are resolved through jiff's IANA database. The caller injects the
//! clock (`now`), so nothing here reads the system time.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::{Error, Result};

/// A resolved zone together with the name shown in the prompt.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub(crate) name: String,
    pub(crate) tz: TimeZone,
}

impl Zone {
    pub(crate) fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
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
        Ok(Self {
            name: trimmed.to_owned(),
            tz,
        })
    }

    /// The system zone when it has an IANA name, else UTC (an unnamed zone
    /// could not be shown truthfully in the prompt).
    pub(crate) fn system_or_utc() -> Self {
        let tz = TimeZone::system();
        match tz.iana_name() {
            Some(name) => Self {
                name: name.to_owned(),
                tz,
            },
            None => Self::utc(),
        }
    }

    /// The civil date of `now` in this zone.
    pub(crate) fn date(&self, now: Timestamp) -> Date {
        now.to_zoned_datetime(self.tz.clone()).date()
    }

    /// `## Current Time` block, for example
    /// `## Current Time\n\n- **Date:** Sunday, February 1, 2026\n- **Time:** 7:15 PM\n- **Timezone:** America/Los_Angeles`.
    pub(crate) fn time_context(&self, now: Timestamp) -> String {
        let zoned = now.to_zoned_datetime(self.tz.clone());
        format!(
            "## Current Time\n\n- **Date:** {}\n- **Time:** {}\n- **Timezone:** {}",
            zoned.strftime("%A, %B %-d, %Y"),
            zoned.strftime("%-I:%M %p"),
            self.name
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
        assert_eq!(la.date(now).to_string(), "2026-02-01");
        assert_eq!(tokyo.date(now).to_string(), "2026-02-02");
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
