//! Limits of one user and the budget periods they are counted in.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The limits that apply to one user; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Hard budget per day, in micro-dollars.
    pub budget_day_micros: Option<u64>,
    /// Hard budget per month, in micro-dollars.
    pub budget_month_micros: Option<u64>,
    /// Percentage of a budget from which responses carry a warning.
    pub soft_percent: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt and completion) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

impl Limits {
    /// Whether no limit of any kind is set.
    pub fn is_empty(&self) -> bool {
        self.budget_day_micros.is_none()
            && self.budget_month_micros.is_none()
            && self.rpm.is_none()
            && self.tpm.is_none()
            && self.concurrency.is_none()
    }

    /// These limits, with every unset one taken from `defaults`.
    pub fn or(self, defaults: &Limits) -> Limits {
        Limits {
            budget_day_micros: self.budget_day_micros.or(defaults.budget_day_micros),
            budget_month_micros: self.budget_month_micros.or(defaults.budget_month_micros),
            soft_percent: self.soft_percent.or(defaults.soft_percent),
            rpm: self.rpm.or(defaults.rpm),
            tpm: self.tpm.or(defaults.tpm),
            concurrency: self.concurrency.or(defaults.concurrency),
        }
    }
}

/// Which budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    /// The calendar day in the budget time zone.
    Day,
    /// The calendar month in the budget time zone.
    Month,
}

impl PeriodKind {
    /// `day` or `month`, as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// Which rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl RateKind {
    /// `rpm` or `tpm`, as the configuration names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
        }
    }
}

/// The current day and month in the budget time zone: their keys, when they
/// end, and how long their counters must be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Periods {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// `YYYY-MM`.
    pub month: String,
    /// When the day ends.
    pub day_resets_at: Timestamp,
    /// When the month ends.
    pub month_resets_at: Timestamp,
}

/// A day past its period's end: the counters outlive the period a little,
/// so a settlement that arrives just after midnight still finds its key.
const GRACE_SECS: u64 = 86_400;

impl Periods {
    /// The periods `now` falls in, in `tz`. Falls back to `now` in the (practically
    /// impossible) case that a date is outside the supported range.
    pub fn at(now: Timestamp, tz: &TimeZone) -> Self {
        let zoned = now.to_zoned_datetime(tz.clone());
        let date = zoned.date();
        let start = |d: jiff::civil::Date| {
            d.to_zoned_datetime(tz.clone())
                .map(|z| z.timestamp())
                .unwrap_or(now)
        };
        let tomorrow = date.tomorrow().unwrap_or(date);
        let next_month = date.last_of_month().tomorrow().unwrap_or(date);
        Self {
            day: date.strftime("%Y-%m-%d").to_string(),
            month: date.strftime("%Y-%m").to_string(),
            day_resets_at: start(tomorrow),
            month_resets_at: start(next_month),
        }
    }

    /// Seconds the counters of `kind` must live from `now`.
    pub fn ttl_secs(&self, kind: PeriodKind, now: Timestamp) -> u64 {
        let end = match kind {
            PeriodKind::Day => self.day_resets_at,
            PeriodKind::Month => self.month_resets_at,
        };
        let left = end.as_second().saturating_sub(now.as_second()).max(0);
        u64::try_from(left).unwrap_or(0) + GRACE_SECS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_the_zone() {
        let now: Timestamp = "2026-03-31T23:30:00Z".parse().expect("ts");
        let utc = Periods::at(now, &TimeZone::UTC);
        assert_eq!(
            (utc.day.as_str(), utc.month.as_str()),
            ("2026-03-31", "2026-03")
        );
        assert_eq!(utc.day_resets_at.to_string(), "2026-04-01T00:00:00Z");
        assert_eq!(utc.month_resets_at.to_string(), "2026-04-01T00:00:00Z");
        let tz = TimeZone::fixed(jiff::tz::offset(2));
        let plus2 = Periods::at(now, &tz);
        assert_eq!(
            (plus2.day.as_str(), plus2.month.as_str()),
            ("2026-04-01", "2026-04")
        );
        assert_eq!(plus2.day_resets_at.to_string(), "2026-04-01T22:00:00Z");
        assert_eq!(plus2.month_resets_at.to_string(), "2026-04-30T22:00:00Z");
        assert_eq!(utc.ttl_secs(PeriodKind::Day, now), 1800 + GRACE_SECS);
    }

    #[test]
    fn request_limits_override_defaults() {
        let defaults = Limits {
            rpm: Some(10),
            tpm: Some(1000),
            ..Limits::default()
        };
        let mine = Limits {
            rpm: Some(5),
            ..Limits::default()
        }
        .or(&defaults);
        assert_eq!((mine.rpm, mine.tpm), (Some(5), Some(1000)));
        assert!(Limits::default().is_empty() && !mine.is_empty());
    }
}
